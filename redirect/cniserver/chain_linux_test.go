package cniserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/cnimsg"
	"github.com/ambit-mesh/ambit/redirect/nstest"
	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

// UpstreamPlugins is the containernetworking/plugins release the tests run.
const UpstreamPlugins = "v1.9.1"

var (
	binsOnce sync.Once
	binsDir  string
	binsErr  error
)

// cniBins returns a directory holding ambit-cni (built from this tree) and
// the upstream bridge, host-local and loopback plugins: from
// $AMBIT_CNI_PLUGINS or /opt/cni/bin, else `go install`ed into the user
// cache.
func cniBins(t testing.TB) string {
	t.Helper()
	binsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ambit-cni-bins-")
		if err != nil {
			binsErr = err
			return
		}
		binsDir = dir
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "ambit-cni"), "github.com/ambit-mesh/ambit/cmd/ambit-cni").CombinedOutput()
		if err != nil {
			binsErr = fmt.Errorf("build ambit-cni: %v: %s", err, out)
			return
		}
		src := ""
		for _, d := range []string{os.Getenv("AMBIT_CNI_PLUGINS"), "/opt/cni/bin"} {
			if d != "" && exists(filepath.Join(d, "bridge")) && exists(filepath.Join(d, "host-local")) {
				src = d
				break
			}
		}
		if src == "" {
			cache, _ := os.UserCacheDir()
			src = filepath.Join(cache, "ambit", "cni-plugins-"+UpstreamPlugins)
			if !exists(filepath.Join(src, "bridge")) {
				cmd := exec.Command("go", "install",
					"github.com/containernetworking/plugins/plugins/main/bridge@"+UpstreamPlugins,
					"github.com/containernetworking/plugins/plugins/ipam/host-local@"+UpstreamPlugins,
					"github.com/containernetworking/plugins/plugins/main/loopback@"+UpstreamPlugins)
				cmd.Env = append(os.Environ(), "GOBIN="+src, "GOFLAGS=")
				cmd.Dir = os.TempDir()
				if out, err := cmd.CombinedOutput(); err != nil {
					binsErr = fmt.Errorf("install upstream CNI plugins: %v: %s", err, out)
					return
				}
			}
		}
		for _, p := range []string{"bridge", "host-local", "loopback"} {
			if err := os.Symlink(filepath.Join(src, p), filepath.Join(dir, p)); err != nil {
				binsErr = err
				return
			}
		}
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return binsDir
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

var netSeq atomic.Int32

// captureEnroller stands in for the daemon's enroller (node/enrol) over a
// real capture manager: decide says whether a pod is captured, certify
// plays the certificate fetch that precedes capture.
type captureEnroller struct {
	m       *redirect.Manager
	decide  func(cnimsg.Pod) (bool, error)
	certify func(cnimsg.Pod) error
}

func (e *captureEnroller) Add(ctx context.Context, p Pod) (bool, error) {
	if ok, err := e.decide(p.Pod); err != nil || !ok {
		return false, err
	}
	if err := e.certify(p.Pod); err != nil {
		return false, fmt.Errorf("certificate: %w", err)
	}
	return true, e.m.Apply(ctx, p.Netns, p.Capture)
}

func (e *captureEnroller) Check(ctx context.Context, p Pod) (bool, error) {
	if ok, err := e.decide(p.Pod); err != nil || !ok {
		return false, err
	}
	return true, e.m.Check(ctx, p.Netns, p.Capture)
}

func (e *captureEnroller) Del(ctx context.Context, id string) error {
	return e.m.Remove(ctx, redirect.PodNetns{ID: id})
}

func enrolAll(cnimsg.Pod) (bool, error) { return true, nil }

// node is a daemon (capture manager + CNI server) and a CNI network.
type node struct {
	t        testing.TB
	m        *redirect.Manager
	srv      *Server
	socket   string
	cni      *libcni.CNIConfig
	bridge   string
	gw4      netip.Addr
	dir      string
	prefetch atomic.Int64
	prefErr  atomic.Pointer[error]
}

func newNode(t testing.TB, decide func(cnimsg.Pod) (bool, error)) *node {
	t.Helper()
	nstest.NeedRoot(t)
	k := 100 + os.Getpid()%100 + int(netSeq.Add(1))%50
	n := &node{t: t, dir: t.TempDir(), bridge: fmt.Sprintf("ambc%d", k), gw4: netip.MustParseAddr(fmt.Sprintf("198.19.%d.1", k))}
	if old, err := netlink.LinkByName(n.bridge); err == nil {
		netlink.LinkDel(old)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(n.bridge); err == nil {
			netlink.LinkDel(l)
		}
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := redirect.New(context.Background(), redirect.Options{PinDir: filepath.Join(nstest.MountBPFFS(t), "ambit"), StateDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Uninstall(context.Background()) })
	n.m = m
	n.socket = filepath.Join(n.dir, "cni.sock")
	enr := &captureEnroller{m: m, decide: decide, certify: func(cnimsg.Pod) error {
		n.prefetch.Add(1)
		if e := n.prefErr.Load(); e != nil {
			return *e
		}
		return nil
	}}
	srv, err := New(Options{SocketPath: n.socket, Enroller: enr, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	n.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{cniBins(t)}, filepath.Join(n.dir, "cache"), nil)
	return n
}

// conflist is a runtime's network: bridge + host-local, then ambit-cni.
func (n *node) conflist(version, socket string) *libcni.NetworkConfigList {
	n.t.Helper()
	k := strings.TrimPrefix(n.bridge, "ambc")
	s := fmt.Sprintf(`{
  "cniVersion": %q,
  "name": "ambit-test-%s",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true,
     "ipam": {"type": "host-local", "dataDir": %q,
              "ranges": [[{"subnet": "198.19.%s.0/24"}], [{"subnet": "fd00:ac:%s::/64"}]]}},
    {"type": "ambit-cni", "socketPath": %q, "timeoutSeconds": 5}
  ]
}`, version, k, n.bridge, filepath.Join(n.dir, "ipam"), k, k, socket)
	l, err := libcni.ConfListFromBytes([]byte(s))
	if err != nil {
		n.t.Fatal(err)
	}
	return l
}

func (n *node) rt(id, path string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: path, IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "web-" + id}, {"K8S_POD_INFRA_CONTAINER_ID", id}, {"K8S_POD_UID", "uid-" + id}}}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The real chain, invoked as a runtime does (libcni: CNI_COMMAND,
// CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH, CNI_ARGS, config with
// prevResult on stdin): ADD enrols the pod before returning, passes the
// bridge's result through, the pod's outbound connect is captured and a
// probe from the host reaches the app; CHECK passes; DEL removes capture;
// DEL again and DEL of an unknown pod succeed. For spec 1.0.0 and 0.4.0.
func TestChainedPlugin(t *testing.T) {
	for _, v := range []string{"1.0.0", "0.4.0"} {
		t.Run(v, func(t *testing.T) {
			n := newNode(t, enrolAll)
			ctx := ctxT(t)
			ns, path := nstest.NewNetns(t, n.dir, "pod1")
			list := n.conflist(v, n.socket)
			rt := n.rt("c0ffee01", path)
			res, err := n.cni.AddNetworkList(ctx, list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			t.Cleanup(func() { n.cni.DelNetworkList(context.Background(), list, rt) })
			cur, err := current.NewResultFromResult(res)
			if err != nil || len(cur.IPs) != 2 {
				t.Fatalf("result passed through: %v %v", cur, err)
			}
			if n.prefetch.Load() != 1 {
				t.Errorf("prefetch called %d times", n.prefetch.Load())
			}
			ls, err := n.m.Listeners("c0ffee01")
			if err != nil {
				t.Fatalf("not enrolled after ADD: %v", err)
			}
			st, _ := n.m.State()
			if !strings.Contains(st, "pod c0ffee01") || !strings.Contains(st, "tc host_egress attached") ||
				!strings.Contains(st, "config probe ["+n.gw4.String()) {
				t.Errorf("state after ADD:\n%s", st)
			}
			// Outbound capture is live as soon as ADD returned.
			dst := netip.MustParseAddrPort("203.0.113.7:443")
			got := make(chan netip.AddrPort, 1)
			go func() {
				c, err := ls.Outbound.Accept()
				if err != nil {
					return
				}
				d, _ := n.m.OriginalDst(c)
				c.Close()
				got <- d
			}()
			if err := inPod(ns, func() error {
				c, err := net.DialTimeout("tcp", dst.String(), 3*time.Second)
				if err == nil {
					c.Close()
				}
				return err
			}); err != nil {
				t.Fatalf("pod connect: %v", err)
			}
			if d := <-got; d != dst {
				t.Errorf("original destination %v", d)
			}
			// ambit's marked dialer works in the pod after the CNI request's
			// descriptor is gone: the app on the pod's own IP, uncaptured.
			var app net.Listener
			if err := inPod(ns, func() (err error) { app, err = net.Listen("tcp", "[::]:8080"); return err }); err != nil {
				t.Fatal(err)
			}
			defer app.Close()
			go func() {
				if c, err := app.Accept(); err == nil {
					c.Write([]byte("app"))
					c.Close()
				}
			}()
			podIP, _ := netip.AddrFromSlice(cur.IPs[0].Address.IP)
			dc, err := n.m.Dial(ctx, "c0ffee01", "tcp", netip.AddrPortFrom(podIP.Unmap(), 8080).String())
			if err != nil {
				t.Fatalf("ambit dial into pod: %v", err)
			}
			hello, _ := io.ReadAll(dc)
			dc.Close()
			if string(hello) != "app" {
				t.Errorf("ambit dial reached %q, want the app", hello)
			}
			if err := n.cni.CheckNetworkList(ctx, list, rt); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := n.cni.DelNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if _, err := n.m.Listeners("c0ffee01"); err == nil {
				t.Error("still enrolled after DEL")
			}
			if st, _ := n.m.State(); strings.Contains(st, "pod ") {
				t.Errorf("state after DEL:\n%s", st)
			}
			if err := n.cni.DelNetworkList(ctx, list, rt); err != nil {
				t.Errorf("second DEL: %v", err)
			}
			if err := n.cni.DelNetworkList(ctx, list, n.rt("unknown1", path)); err != nil {
				t.Errorf("DEL of unknown pod: %v", err)
			}
			if s := n.srv.Stats(); s.Added != 1 || s.Checked != 1 || s.Deleted < 3 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// A pod that must be enrolled never runs uncaptured: daemon unreachable,
// enrolment decision failing, certificate failing each fail the ADD (and
// leave no capture behind); a pod not to be enrolled passes straight
// through.
func TestChainedPluginFailures(t *testing.T) {
	enrolErr := atomic.Bool{}
	n := newNode(t, func(p cnimsg.Pod) (bool, error) {
		if enrolErr.Load() {
			return false, fmt.Errorf("agent not ready")
		}
		return p.Name != "web-optout1", nil
	})
	ctx := ctxT(t)
	_, path := nstest.NewNetns(t, n.dir, "pod1")
	try := func(name string, list *libcni.NetworkConfigList, id string) error {
		rt := n.rt(id, path)
		_, err := n.cni.AddNetworkList(ctx, list, rt)
		n.cni.DelNetworkList(ctx, n.conflist("1.0.0", filepath.Join(n.dir, "nowhere.sock")), rt)
		return err
	}
	if err := try("unreachable", n.conflist("1.0.0", filepath.Join(n.dir, "nowhere.sock")), "dead0001"); err == nil ||
		!strings.Contains(err.Error(), "unreachable") {
		t.Errorf("daemon unreachable: ADD returned %v", err)
	}
	enrolErr.Store(true)
	if err := try("enrol", n.conflist("1.0.0", n.socket), "dead0002"); err == nil || !strings.Contains(err.Error(), "agent not ready") {
		t.Errorf("enrol failing: ADD returned %v", err)
	}
	enrolErr.Store(false)
	perr := fmt.Errorf("CA down")
	n.prefErr.Store(&perr)
	if err := try("prefetch", n.conflist("1.0.0", n.socket), "dead0003"); err == nil || !strings.Contains(err.Error(), "CA down") {
		t.Errorf("prefetch failing: ADD returned %v", err)
	}
	n.prefErr.Store(nil)
	if st, _ := n.m.State(); strings.Contains(st, "pod ") {
		t.Errorf("capture left after failed ADDs:\n%s", st)
	}
	if err := try("optout", n.conflist("1.0.0", n.socket), "optout1"); err != nil {
		t.Errorf("not enrolled pod: ADD %v", err)
	}
	if _, err := n.m.Listeners("optout1"); err == nil {
		t.Error("opted-out pod was enrolled")
	}
	if s := n.srv.Stats(); s.NotEnrolled != 1 || s.Failed != 2 || s.Added != 0 {
		t.Errorf("stats %+v", s)
	}
}

// inPod runs fn as an app inside ns (plain, unmarked sockets).
func inPod(ns *os.File, fn func() error) error {
	return redirect.InNetns(ns, fn)
}

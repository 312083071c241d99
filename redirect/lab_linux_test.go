package redirect

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/redirect/nstest"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func needRoot(t testing.TB) { nstest.NeedRoot(t) }

func newNetns(t testing.TB, dir, name string) (*os.File, string) {
	return nstest.NewNetns(t, dir, name)
}

func mountBPFFS(t testing.TB) string { return nstest.MountBPFFS(t) }

var labSeq atomic.Int32

// lab is a node: a bridge in the host netns with a gateway address, and
// pods (netns + veth) attached to it.
type lab struct {
	t      testing.TB
	k      int
	dir    string
	bridge netlink.Link
	gw4    netip.Addr
	gw6    netip.Addr
}

func newLab(t testing.TB) *lab {
	t.Helper()
	needRoot(t)
	k := 100 + int(os.Getpid()%100) + int(labSeq.Add(1))%50
	l := &lab{t: t, k: k, dir: t.TempDir(),
		gw4: netip.MustParseAddr(fmt.Sprintf("198.18.%d.1", k)),
		gw6: netip.MustParseAddr(fmt.Sprintf("fd00:ab:%x::1", k))}
	name := fmt.Sprintf("ambr%d", k)
	if old, err := netlink.LinkByName(name); err == nil {
		netlink.LinkDel(old)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("add bridge: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(br) })
	l.bridge = br
	addAddr(t, nil, br, l.gw4, 24)
	addAddr(t, nil, br, l.gw6, 64)
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	return l
}

func addAddr(t testing.TB, h *netlink.Handle, link netlink.Link, a netip.Addr, bits int) {
	t.Helper()
	if h == nil {
		h = &netlink.Handle{}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, addr); err != nil {
		t.Fatalf("addr add %v: %v", a, err)
	}
}

type testPod struct {
	t      testing.TB
	name   string
	ns     *os.File
	path   string
	hostIf string
	v4, v6 netip.Addr
}

// pod creates a pod netns wired to the bridge as host number n.
func (l *lab) pod(name string, n int) *testPod {
	t := l.t
	t.Helper()
	ns, path := newNetns(t, l.dir, name)
	p := &testPod{t: t, name: name, ns: ns, path: path,
		hostIf: fmt.Sprintf("amv%d_%d", l.k, n),
		v4:     netip.MustParseAddr(fmt.Sprintf("198.18.%d.%d", l.k, n)),
		v6:     netip.MustParseAddr(fmt.Sprintf("fd00:ab:%x::%x", l.k, n))}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.hostIf, MasterIndex: l.bridge.Attrs().Index},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(veth) })
	if err := netlink.LinkSetUp(veth); err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, n := range []string{"lo", "eth0"} {
		lk, err := h.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(lk); err != nil {
			t.Fatal(err)
		}
		if n == "eth0" {
			addAddr(t, h, lk, p.v4, 24)
			addAddr(t, h, lk, p.v6, 64)
		}
	}
	return p
}

func (p *testPod) netns() PodNetns {
	return PodNetns{ID: p.name, NetnsPath: p.path, Interface: "eth0", HostInterface: p.hostIf, Addresses: []netip.Addr{p.v4, p.v6}}
}

// listen opens an app listener (unmarked) in the pod.
func (p *testPod) listen(port int) net.Listener {
	p.t.Helper()
	var ln net.Listener
	err := inNetns(p.ns, func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", port))
		return err
	})
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { ln.Close() })
	return ln
}

// dial connects as the app would (unmarked socket) from inside the pod.
func (p *testPod) dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := inNetns(p.ns, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr.String())
		return err
	})
	return c, err
}

// hostDial connects from the host netns (the kubelet's view).
func hostDial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr.String())
}

// serveEcho accepts on ln and echoes until ln closes; each accepted
// connection's local address goes to seen (non-blocking).
func serveEcho(ln net.Listener, seen chan<- string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if seen != nil {
			select {
			case seen <- c.LocalAddr().String():
			default:
			}
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// roundTrip writes msg and expects it echoed.
func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

func newManager(t testing.TB, pinDir, stateDir string) *Manager {
	t.Helper()
	m, err := New(context.Background(), Options{PinDir: pinDir, StateDir: stateDir,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// testManager is a Manager on its own bpffs, uninstalled at cleanup.
func testManager(t testing.TB) *Manager {
	t.Helper()
	m := newManager(t, filepath.Join(mountBPFFS(t), "ambit"), t.TempDir())
	t.Cleanup(func() {
		if err := m.Uninstall(context.Background()); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	return m
}

// dialFrom connects from inside the pod with an explicit source address.
func dialFrom(ctx context.Context, p *testPod, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := inNetns(p.ns, func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		c, err = d.DialContext(ctx, "tcp", dst.String())
		return err
	})
	return c, err
}

package dataplane

import (
	"github.com/ambit-mesh/ambit/redirect/nstest"

	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/redirect"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The lab is a node: pod network namespaces with veths on one bridge in the
// host netns, as the redirect tests build them (its helpers are internal to
// redirect). Its own address range and link names keep it apart from the
// redirect tests running at the same time.

var labSeq atomic.Int32

type lab struct {
	t      testing.TB
	k      int
	dir    string
	bridge netlink.Link
}

func newLab(t testing.TB) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths and a bridge, and attaches eBPF capture")
	}
	k := 10 + (os.Getpid()+int(labSeq.Add(1)))%200
	l := &lab{t: t, k: k, dir: t.TempDir()}
	name := fmt.Sprintf("dpbr%d", k)
	if old, err := netlink.LinkByName(name); err == nil {
		netlink.LinkDel(old)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("add bridge: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(br) })
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	l.bridge = br
	return l
}

type labPod struct {
	t      testing.TB
	name   string
	ns     *os.File
	path   string
	hostIf string
	ip     netip.Addr
}

// pod creates a pod netns wired to the bridge as host n (IPv4 only).
func (l *lab) pod(name string, n int) *labPod {
	t := l.t
	t.Helper()
	ns, path := nstest.NewNetns(t, l.dir, name)
	p := &labPod{t: t, name: name, ns: ns, path: path,
		hostIf: fmt.Sprintf("dpv%d_%d", l.k, n),
		ip:     netip.MustParseAddr(fmt.Sprintf("198.19.%d.%d", l.k, n))}
	if old, err := netlink.LinkByName(p.hostIf); err == nil {
		netlink.LinkDel(old) // left by a run that was killed before its cleanup
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.hostIf, MasterIndex: l.bridge.Attrs().Index},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(int(p.ns.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(veth) })
	if err := netlink.LinkSetUp(veth); err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(p.ns.Fd()))
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
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}
			if err := h.AddrAdd(lk, addr); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p
}

func (p *labPod) netns() redirect.PodNetns {
	return redirect.PodNetns{ID: p.name, NetnsPath: p.path, Interface: "eth0", HostInterface: p.hostIf,
		Addresses: []netip.Addr{p.ip}}
}

// listen opens an app listener (unmarked socket) inside the pod.
func (p *labPod) listen(port int) net.Listener {
	p.t.Helper()
	var ln net.Listener
	err := redirect.InNetns(p.ns, func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { ln.Close() })
	return ln
}

// dial connects as the app does: a plain net.Dialer on a thread in the pod
// netns (the socket keeps the namespace).
func (p *labPod) dial(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := redirect.InNetns(p.ns, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", dst.String())
		return err
	})
	return c, err
}

// appServer is an echo app that reports each accepted connection.
type appServer struct {
	seen chan netip.AddrPort // remote address of each accepted connection
	wg   sync.WaitGroup
}

func serveApp(t testing.TB, ln net.Listener) *appServer {
	a := &appServer{seen: make(chan netip.AddrPort, 16)}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select { // tests read seen; benchmarks do not
			case a.seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort():
			default:
			}
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		a.wg.Wait()
	})
	return a
}

// roundTrip writes msg and expects it echoed.
func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
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

func testManager(t testing.TB) *redirect.Manager {
	t.Helper()
	bpffs := t.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(bpffs, unix.MNT_DETACH) })
	m, err := redirect.New(context.Background(), redirect.Options{
		PinDir: filepath.Join(bpffs, "ambit"), StateDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("redirect.New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Uninstall(context.Background()); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	return m
}

// tcpPorts counts IPv4 TCP segments per destination port, and whether any
// frame carries marker.
func tcpPorts(frames [][]byte, marker []byte) (perPort map[uint16]int, sawMarker bool) {
	perPort = map[uint16]int{}
	for _, f := range frames {
		if bytes.Contains(f, marker) {
			sawMarker = true
		}
		if len(f) < 34 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP || f[23] != unix.IPPROTO_TCP {
			continue
		}
		l4 := f[14+int(f[14]&0xf)*4:]
		if len(l4) >= 4 {
			perPort[binary.BigEndian.Uint16(l4[2:4])]++
		}
	}
	return perPort, sawMarker
}

package redirect

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/bpf"
	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Guarantees 3 and 4: the kubelet's probes (from the host stack, source the
// pod's gateway) reach the app of an enrolled pod directly, replies
// included; a host on the wire that forges the gateway address as its
// source is dropped before the pod; an excluded inbound port works both
// ways; the same forger with its own address is captured (15006).
func TestProbesAndExemptFlows(t *testing.T) {
	l := newLab(t)
	b, c := l.pod("pod-b", 3), l.pod("pod-c", 4)
	// The forger: another box on the bridge that claims the gateway's
	// addresses as well as its own.
	r := l.pod("remote", 9)
	h, err := netlink.NewHandleAt(netns.NsHandle(r.ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addAddr(t, h, eth0, l.gw4, 32)
	addAddr(t, h, eth0, l.gw6, 128)
	h.Close()

	app := b.listen(8080)
	seen := make(chan string, 16)
	go serveEcho(app, seen)
	ssh := b.listen(9000)
	go serveEcho(ssh, nil)

	m := testManager(t)
	ctx := ctxT(t, 30*time.Second)
	cfg := Config{ProbeSources: []netip.Addr{l.gw4, l.gw6}, InboundExcludePorts: []uint16{9000}}
	if err := m.Apply(ctx, b.netns(), cfg); err != nil {
		t.Fatal(err)
	}
	ls, _ := m.Listeners("pod-b")
	inbound := make(chan string, 16)
	go serveLocal(ls.Inbound, inbound)

	for _, ip := range []netip.Addr{b.v4, b.v6} {
		dst := netip.AddrPortFrom(ip, 8080)
		// Kubelet: from the host stack.
		conn, err := hostDial(ctx, dst)
		if err != nil {
			t.Fatalf("probe to %v: %v", dst, err)
		}
		if err := roundTrip(conn, "GET /healthz"); err != nil {
			t.Errorf("probe round trip %v: %v", dst, err)
		}
		conn.Close()
		if got := <-seen; got != dst.String() {
			t.Errorf("app accepted probe on %s", got)
		}

		// Forger: same source address, but from the wire.
		src := l.gw4
		if ip.Is6() {
			src = l.gw6
		}
		fctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
		fc, err := dialFrom(fctx, r, src, dst)
		cancel()
		if err == nil {
			fc.Close()
			t.Errorf("forged probe source %v reached %v", src, dst)
		}

		// Excluded inbound port from another pod: both directions work.
		ec, err := c.dial(ctx, netip.AddrPortFrom(ip, 9000))
		if err != nil {
			t.Fatalf("excluded port: %v", err)
		}
		if err := roundTrip(ec, "exempt both ways"); err != nil {
			t.Errorf("excluded port round trip: %v", err)
		}
		ec.Close()

		// The forger with its own address is ordinary inbound: captured.
		own := r.v4
		if ip.Is6() {
			own = r.v6
		}
		oc, err := dialFrom(ctx, r, own, dst)
		if err != nil {
			t.Fatalf("remote own address: %v", err)
		}
		if got := <-inbound; got != dst.String() {
			t.Errorf("inbound listener got %s", got)
		}
		oc.Close()
	}
	select {
	case s := <-seen:
		t.Errorf("app accepted an unexpected connection on %s", s)
	case <-time.After(100 * time.Millisecond):
	}
	stats, err := ebpf.LoadPinnedMap(filepath.Join(m.podDir("pod-b"), pinStats), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	var forged uint64
	if err := stats.Lookup(bpf.StatForgedProbeDrop, &forged); err != nil || forged == 0 {
		t.Errorf("forged probe drops = %d (%v), want > 0", forged, err)
	}
}

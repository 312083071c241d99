package redirect

import (
	"github.com/ambit-mesh/ambit/redirect/nstest"

	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/bpf"
	"github.com/cilium/ebpf"
)

var marker = []byte("AMBIT-PLAINTEXT-MARKER-7f3a")

// appSend connects from the pod as the app and, if that works, sends the
// marker. It returns the connect error.
func appSend(p *testPod, dst netip.AddrPort, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := p.dial(ctx, dst)
	if err != nil {
		return err
	}
	c.Write(marker)
	time.Sleep(50 * time.Millisecond)
	c.Close()
	return nil
}

// Guarantee 5: with the daemon killed (a real process, SIGKILL) its pinned
// capture stays: the app's outbound connects are refused and inbound
// connections never reach the app; with the daemon's node-wide state for the
// pod lost, the per-pod egress program drops the app's connects. A packet
// capture on each pod's veth shows no plaintext marker and no segment to
// the app port.
func TestFailClosed(t *testing.T) {
	l := newLab(t)
	a, b, c := l.pod("pod-a", 2), l.pod("pod-b", 3), l.pod("pod-c", 4)
	// B enrolled (inbound), C a plain server outside the mesh.
	appB := b.listen(8080)
	seenB := make(chan string, 8)
	go serveEcho(appB, seenB)
	appC := c.listen(8080)
	seenC := make(chan string, 8)
	go serveEcho(appC, seenC)

	pinDir, stateDir := filepath.Join(mountBPFFS(t), "ambit"), t.TempDir()
	kill := startHelper(t, helperSpec{PinDir: pinDir, StateDir: stateDir,
		Pods: []PodNetns{a.netns(), b.netns()}, Configs: []Config{{}, {}}})
	m := newManager(t, pinDir, stateDir) // shares only the pins; no listeners of its own
	t.Cleanup(func() { m.Uninstall(context.Background()) })

	kill()

	snifA, snifB := nstest.Sniff(t, a.hostIf), nstest.Sniff(t, b.hostIf)
	for _, ip := range []netip.Addr{c.v4, c.v6} {
		err := appSend(a, netip.AddrPortFrom(ip, 8080), 2*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("daemon killed: app connect to %v: %v, want connection refused", ip, err)
		}
	}
	for _, ip := range []netip.Addr{b.v4, b.v6} {
		if err := appSend(c, netip.AddrPortFrom(ip, 8080), 700*time.Millisecond); err == nil {
			t.Errorf("daemon killed: inbound connect from pod-c to enrolled %v succeeded", ip)
		}
	}
	select {
	case s := <-seenB:
		t.Errorf("daemon killed: enrolled app accepted a plaintext connection on %s", s)
	case s := <-seenC:
		t.Errorf("daemon killed: outside app reached in plaintext on %s", s)
	case <-time.After(100 * time.Millisecond):
	}

	// Capture state lost: A's entry in the node-wide map disappears.
	st, err := m.readState("pod-a")
	if err != nil || st == nil {
		t.Fatalf("state of pod-a: %v", err)
	}
	if err := m.pods.Delete(st.Cookie); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []netip.Addr{c.v4, c.v6} {
		if err := appSend(a, netip.AddrPortFrom(ip, 8080), 700*time.Millisecond); err == nil {
			t.Errorf("state lost: app connect to %v succeeded", ip)
		}
	}
	stats, err := ebpf.LoadPinnedMap(filepath.Join(m.podDir("pod-a"), pinStats), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	var drops uint64
	if err := stats.Lookup(bpf.StatEgressSYNDrop, &drops); err != nil || drops == 0 {
		t.Errorf("egress SYN drops = %d (%v), want > 0", drops, err)
	}
	select {
	case s := <-seenC:
		t.Errorf("state lost: outside app reached in plaintext on %s", s)
	case <-time.After(100 * time.Millisecond):
	}

	statsB, err := ebpf.LoadPinnedMap(filepath.Join(m.podDir("pod-b"), pinStats), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer statsB.Close()
	var noListener uint64
	if err := statsB.Lookup(bpf.StatNoListenerDrop, &noListener); err != nil || noListener == 0 {
		t.Errorf("pod-b sk_lookup no-listener drops = %d (%v), want > 0", noListener, err)
	}

	framesA, framesB := snifA.Close(), snifB.Close()
	if n, saw := tcpTo(framesA, 8080, marker); n != 0 || saw {
		t.Errorf("pod-a veth: %d segments to :8080, marker seen %v", n, saw)
	}
	if _, saw := tcpTo(framesB, 8080, marker); saw {
		t.Errorf("pod-b veth: plaintext marker on the wire")
	}
	if n, _ := tcpTo(framesB, 8080, marker); n == 0 {
		t.Errorf("pod-b veth: no SYN to :8080 captured at all; the capture itself is broken")
	}
	t.Logf("pod-a veth %d frames, pod-b veth %d frames, egress SYN drops %d", len(framesA), len(framesB), drops)
}

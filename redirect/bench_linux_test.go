package redirect

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkConnect measures connect() as the app sees it (dial until the
// handshake completes, then close), from inside a pod netns:
//   - uncaptured/remote: a pod outside the mesh connecting to another pod;
//   - uncaptured/loopback: the same pod connecting to a listener on its own
//     loopback (the path a captured connect ends up on, without the hooks);
//   - captured: an enrolled pod connecting to the other pod, rewritten by
//     connect4 to ambit's outbound listener (sockops records the original
//     destination, the listener is found by sk_lookup through the sockmap);
//     the accept side reads the original destination for each connection.
func BenchmarkConnect(b *testing.B) {
	l := newLab(b)
	a, c, srv := l.pod("pod-a", 2), l.pod("pod-c", 4), l.pod("pod-s", 5)
	for _, p := range []*testPod{srv, c} {
		ln := p.listen(8080)
		go acceptClose(ln, nil)
	}
	m := testManager(b)
	if err := m.Apply(context.Background(), a.netns(), Config{}); err != nil {
		b.Fatal(err)
	}
	ls, _ := m.Listeners("pod-a")
	go acceptClose(ls.Outbound, m)
	dst := netip.AddrPortFrom(srv.v4, 8080)
	run := func(b *testing.B, p *testPod, to netip.AddrPort) {
		err := inNetns(p.ns, func() error {
			d := net.Dialer{Timeout: 2 * time.Second}
			b.ResetTimer()
			for range b.N {
				conn, err := d.Dial("tcp", to.String())
				if err != nil {
					return err
				}
				conn.Close()
			}
			b.StopTimer()
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Run("uncaptured/remote", func(b *testing.B) { run(b, c, dst) })
	b.Run("uncaptured/loopback", func(b *testing.B) { run(b, c, netip.MustParseAddrPort("127.0.0.1:8080")) })
	b.Run("captured", func(b *testing.B) { run(b, a, dst) })
}

// acceptClose accepts and closes; with m set it first reads the original
// destination, as ambit does.
func acceptClose(ln net.Listener, m *Manager) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if m != nil {
			m.OriginalDst(c)
		}
		c.Close()
	}
}

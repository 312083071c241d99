package tunnel

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Measurements behind the Guard defaults (docs/hbone.md, "Hostile peers"):
//
//	go test -run '^$' -bench 'Handshake|PendingHandshake|HeldStreams' -benchtime 1x -count 3 ./tunnel
//
// BenchmarkHandshake: one full mTLS 1.3 handshake on loopback, both ends in
// this process (ns/op is client plus server CPU and the round trips).
func BenchmarkHandshake(b *testing.B) {
	e := newEnv(b, envOpt{})
	conf := clientTLS(e.cliSVIDs, e.bundles, srcID, []spiffeid.ID{dstID}, Settings{})
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp", e.tunnel.String())
		if err != nil {
			b.Fatal(err)
		}
		tc := tls.Client(c, conf)
		if err := tc.Handshake(); err != nil {
			b.Fatal(err)
		}
		_ = tc.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/handshake")
}

// BenchmarkPendingHandshake: the server memory of a connection accepted
// but stalled before its ClientHello (a slowloris handshake).
func BenchmarkPendingHandshake(b *testing.B) {
	const n = 500
	e := newEnv(b, envOpt{guard: NewGuard(GuardConfig{MaxHandshakes: -1})})
	before := memInUse()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", e.tunnel.String())
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.srv.cfg.Guard.Handshakes() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	after := memInUse()
	b.ReportMetric(float64(after-before)/n/1024, "KiB/pending-handshake")
	for _, c := range conns {
		_ = c.Close()
	}
}

// BenchmarkHeldStreams: the memory of established, idle streams one
// identity holds (both endpoints and the destination app in this process,
// as BenchmarkIdleMemory), the unit of MaxStreamsPerIdentity.
func BenchmarkHeldStreams(b *testing.B) {
	const n = 1000
	e := newEnv(b, envOpt{})
	before := memInUse()
	conns := make([]net.Conn, 0, n)
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := e.cli.Dial(ctx, e.req())
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(100 * time.Millisecond)
	after := memInUse()
	b.ReportMetric(float64(after-before)/n/1024, "KiB/stream")
	for _, c := range conns {
		_ = c.Close()
	}
}

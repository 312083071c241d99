package metrics

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/tunnel"
)

// echoTunnel runs an echo app behind a real tunnel.Server and returns a
// Client; both report to m. Everything stops at the test's end.
func echoTunnel(t *testing.T, m *Metrics) (*tunnel.Client, tunnel.DialRequest) {
	t.Helper()
	ca := identitytest.MustCA("cluster.local")
	bundles := x509bundle.NewSet(ca.Bundle())
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := appLn.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	srv, err := tunnel.NewServer(tunnel.ServerConfig{SVIDs: identitytest.NewSource(ca), Bundles: bundles,
		Hooks: m.TunnelHooks(ReporterDestination), Authorizer: tunnel.AllowAll()})
	if err != nil {
		t.Fatal(err)
	}
	tunLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(ctx, tunLn, tunnel.Workload{ID: dstID, Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	}()
	cli, err := tunnel.NewClient(tunnel.ClientConfig{SVIDs: identitytest.NewSource(ca), Bundles: bundles, Hooks: m.TunnelHooks(ReporterSource)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cli.Close()
		cancel()
		sctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		c2()
		_ = appLn.Close()
		wg.Wait()
	})
	return cli, tunnel.DialRequest{Source: srcID, Destination: appLn.Addr().(*net.TCPAddr).AddrPort(),
		Tunnel: tunLn.Addr().(*net.TCPAddr).AddrPort(), Expected: []spiffeid.ID{dstID}}
}

// TestLiveBytesThroughTunnel: bytes of a connection that is still open are
// in the byte counters of both reporters at every scrape (ambit_ and
// istio_), and its end adds only what was not counted yet.
func TestLiveBytesThroughTunnel(t *testing.T) {
	m := newMetrics(t, Config{})
	cli, req := echoTunnel(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cli.Dial(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	exchange := func(n int) {
		t.Helper()
		if _, err := c.Write([]byte(strings.Repeat("x", n))); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	// want waits until every byte counter shows n (the server's side
	// counts the echo as it writes it, a moment after the client read it).
	want := func(n float64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			text := scrape(t, m.Handler())
			bad := ""
			for _, name := range []string{"istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total",
				"ambit_tcp_sent_bytes_total", "ambit_tcp_received_bytes_total"} {
				for _, r := range []string{"source", "destination"} {
					got, _ := value(t, m.Registry(), name, map[string]string{"reporter": r})
					if got != n {
						bad = name + "{reporter=" + r + "}"
					}
				}
			}
			if bad == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s != %v while open:\n%s", bad, n, text)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	exchange(1000)
	want(1000)
	exchange(500)
	want(1500)
	if got := m.OpenConnections(); got != 2 {
		t.Errorf("OpenConnections = %d, want 2 (one per reporter)", got)
	}
	_ = c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for m.OpenConnections() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	want(1500) // the end adds nothing already counted
	if got, _ := value(t, m, "istio_tcp_connections_closed_total", map[string]string{"response_flags": "-"}); got != 2 {
		t.Errorf("closed = %v, want 2", got)
	}
}

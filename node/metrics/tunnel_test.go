package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
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

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestThroughTunnel carries real connections through a tunnel.Server and
// tunnel.Client whose hooks come from one Metrics, then scrapes /metrics
// over HTTP: an allowed connection is counted by both reporters with both
// identities, a denied one as failed with response_flags="DENY".
func TestThroughTunnel(t *testing.T) {
	ca := identitytest.MustCA("cluster.local")
	bundles := x509bundle.NewSet(ca.Bundle())
	intruder := spiffeid.RequireFromString("spiffe://cluster.local/ns/evil/sa/intruder")
	var logBuf syncBuffer
	m := newMetrics(t, Config{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))})
	loop := netip.MustParseAddr("127.0.0.1")

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
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		SVIDs: identitytest.NewSource(ca), Bundles: bundles, Hooks: m.TunnelHooks(ReporterDestination),
		Authorizer: tunnel.AuthorizerFunc(func(_ context.Context, r tunnel.AuthzRequest) tunnel.Decision {
			if r.Source == intruder {
				return tunnel.Decision{Reason: "denied by policy", Policy: "pay/deny-evil"}
			}
			return tunnel.Decision{Allow: true, Policy: "pay/allow-shop"}
		}),
	})
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
		_ = srv.Serve(ctx, tunLn, tunnel.Workload{ID: dstID, Addrs: []netip.Addr{loop}})
	}()
	cli, err := tunnel.NewClient(tunnel.ClientConfig{SVIDs: identitytest.NewSource(ca), Bundles: bundles, Hooks: m.TunnelHooks(ReporterSource)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cli.Close()
		cancel()
		sctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		c2()
		_ = appLn.Close()
		wg.Wait()
	}()
	req := func(src spiffeid.ID) tunnel.DialRequest {
		return tunnel.DialRequest{Source: src, Destination: appLn.Addr().(*net.TCPAddr).AddrPort(),
			Tunnel: tunLn.Addr().(*net.TCPAddr).AddrPort(), Expected: []spiffeid.ID{dstID}}
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()

	c, err := cli.Dial(dctx, req(srcID))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("hello through the tunnel")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, %v", got, err)
	}
	_ = c.Close()
	if _, err := cli.Dial(dctx, req(intruder)); !errors.Is(err, tunnel.ErrDenied) {
		t.Fatalf("intruder dial: %v, want ErrDenied", err)
	}

	both := []string{`source_principal="cluster.local/ns/shop/sa/frontend"`, `destination_principal="cluster.local/ns/pay/sa/backend"`,
		`source_workload_namespace="shop"`, `destination_workload_namespace="pay"`, `connection_security_policy="mutual_tls"`}
	want := []struct {
		name  string
		frags []string
	}{
		{"ambit_tcp_connections_opened_total", append([]string{`reporter="destination"`, `direction="inbound"`, `response_flags="-"`}, both...)},
		{"ambit_tcp_connections_opened_total", append([]string{`reporter="source"`, `direction="outbound"`, `response_flags="-"`}, both...)},
		{"ambit_tcp_connections_closed_total", append([]string{`reporter="destination"`, `response_flags="-"`}, both...)},
		{"ambit_tcp_connections_closed_total", append([]string{`reporter="source"`, `response_flags="-"`}, both...)},
		{"ambit_tcp_sent_bytes_total", append([]string{`reporter="destination"`}, both...)},
		{"ambit_tcp_received_bytes_total", append([]string{`reporter="source"`}, both...)},
		{"ambit_tcp_connections_failed_total", []string{`reporter="destination"`, `response_flags="DENY"`,
			`source_principal="cluster.local/ns/evil/sa/intruder"`, `destination_principal="cluster.local/ns/pay/sa/backend"`}},
		// Istio's names and values, as ztunnel reports them.
		{"istio_tcp_connections_opened_total", []string{`reporter="destination"`, `response_flags="-"`, `request_protocol="tcp"`,
			`source_principal="spiffe://cluster.local/ns/shop/sa/frontend"`, `destination_principal="spiffe://cluster.local/ns/pay/sa/backend"`,
			`connection_security_policy="mutual_tls"`}},
		{"istio_tcp_connections_opened_total", []string{`reporter="source"`, `response_flags="-"`,
			`source_principal="spiffe://cluster.local/ns/shop/sa/frontend"`, `destination_principal="spiffe://cluster.local/ns/pay/sa/backend"`}},
		{"istio_tcp_connections_failed_total", []string{`reporter="destination"`, `response_flags="DENY"`,
			`source_principal="spiffe://cluster.local/ns/evil/sa/intruder"`}},
		{"istio_tcp_received_bytes_total", []string{`reporter="destination"`, `response_flags="-"`}},
	}
	// The server's OnEnd runs on its own goroutine after the client saw
	// the end: wait for it.
	var text string
	deadline := time.Now().Add(5 * time.Second)
	for {
		text = scrape(t, m.Handler())
		missing := ""
		for _, w := range want {
			if l := line(text, w.name, w.frags...); l == "" {
				missing = w.name + strings.Join(w.frags, ",")
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no series %s in:\n%s", missing, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, w := range want[:4] {
		if l := line(text, w.name, w.frags...); !strings.HasSuffix(l, " 1") {
			t.Errorf("%s: want 1", l)
		}
	}
	for _, w := range want[4:6] {
		if l := line(text, w.name, w.frags...); !strings.HasSuffix(l, " 24") {
			t.Errorf("%s: want 24 bytes", l)
		}
	}
	if l := line(text, want[6].name, want[6].frags...); !strings.HasSuffix(l, " 1") {
		t.Errorf("%s: want 1", l)
	}

	// Access log: one JSON line per connection per reporter (2 + 2 for the
	// denied one, whose client side also ends).
	deadline = time.Now().Add(5 * time.Second)
	var lines []string
	for {
		lines = strings.Split(strings.TrimSpace(logBuf.String()), "\n")
		if len(lines) >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(lines) != 4 {
		t.Fatalf("%d access log lines, want 4:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	denied := 0
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("not JSON: %s", l)
		}
		if e["response_flags"] == "DENY" && e["reporter"] == "destination" {
			denied++
			if e["reason"] != "denied by policy" || e["policy"] != "pay/deny-evil" {
				t.Errorf("denied line lacks reason/policy: %s", l)
			}
		}
	}
	if denied != 1 {
		t.Errorf("%d denied destination lines, want 1", denied)
	}
}

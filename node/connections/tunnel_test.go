package connections

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/node/metrics"
	"github.com/ambit-mesh/ambit/tunnel"
)

// TestThroughTunnel carries a real connection through a tunnel.Server and
// tunnel.Client whose hooks are one table wrapping the metrics hooks: the
// open connection is listed once per direction with both identities and
// the policy, a denied one never appears, and closing empties the table
// while the metrics still count everything.
func TestThroughTunnel(t *testing.T) {
	ca := identitytest.MustCA("cluster.local")
	bundles := x509bundle.NewSet(ca.Bundle())
	intruder := spiffeid.RequireFromString("spiffe://cluster.local/ns/evil/sa/intruder")
	m, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tbl := newTable(t, Config{Registerer: m.Registry(), Workload: func(ci *tunnel.ConnInfo) string { return string(ci.Direction) + "-side" }})
	hooks := tbl.Hooks(m.NodeHooks())

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
		SVIDs: identitytest.NewSource(ca), Bundles: bundles, Hooks: hooks,
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
		_ = srv.Serve(ctx, tunLn, tunnel.Workload{ID: dstID, Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	}()
	cli, err := tunnel.NewClient(tunnel.ClientConfig{SVIDs: identitytest.NewSource(ca), Bundles: bundles, Hooks: hooks})
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
	appAddr := appLn.Addr().(*net.TCPAddr).AddrPort()
	req := func(src spiffeid.ID) tunnel.DialRequest {
		return tunnel.DialRequest{Source: src, Destination: appAddr, SourceAddr: netip.MustParseAddrPort("10.1.0.7:51000"),
			Tunnel: tunLn.Addr().(*net.TCPAddr).AddrPort(), Expected: []spiffeid.ID{dstID}}
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()

	c, err := cli.Dial(dctx, req(srcID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil { // the server side is spliced by now
		t.Fatal(err)
	}
	if _, err := cli.Dial(dctx, req(intruder)); !errors.Is(err, tunnel.ErrDenied) {
		t.Fatalf("intruder dial: %v, want ErrDenied", err)
	}
	s := waitFor(t, tbl, 2)
	byDir := map[string]Conn{}
	for _, c := range s.Connections {
		byDir[c.Direction] = c
	}
	in, out := byDir["inbound"], byDir["outbound"]
	if in.SourceIdentity != srcID.String() || in.DestinationIdentity != dstID.String() || in.Policy != "pay/allow-shop" ||
		in.DestinationAddr != appAddr.String() || in.Workload != "inbound-side" || in.TunnelAddr != tunLn.Addr().String() {
		t.Errorf("inbound = %+v", in)
	}
	if out.SourceIdentity != srcID.String() || out.DestinationIdentity != dstID.String() || out.SourceAddr != "10.1.0.7:51000" ||
		out.DestinationAddr != appAddr.String() || out.Workload != "outbound-side" {
		t.Errorf("outbound = %+v", out)
	}
	// Bytes while open: "ping" each way on both sides (the server's echo
	// write may be counted a moment after the client read it).
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := tbl.Snapshot()
		ok := len(s.Connections) == 2
		for _, c := range s.Connections {
			ok = ok && c.BytesSent == 4 && c.BytesReceived == 4
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live bytes: %+v, want 4/4 on both", s.Connections)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = c.Close()
	waitFor(t, tbl, 0)
	got := gather(t, m.Registry())
	if got["ambit_tcp_connections_opened_total"] != 2 || got["ambit_connections_table_dropped_total"] != 0 {
		t.Errorf("metrics = %v", got)
	}
}

// waitFor polls until the table holds n connections (the server's hooks
// run on its own goroutines) and returns that snapshot.
func waitFor(t *testing.T, tbl *Table, n int) Snapshot {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := tbl.Snapshot()
		if s.Active == n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("table holds %d connections, want %d: %+v", s.Active, n, s.Connections)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

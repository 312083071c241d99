package admin

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/node/connections"
	"github.com/ambit-mesh/ambit/tunnel"
)

func TestConnectionsEndpoint(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tbl, err := connections.New(connections.Config{MaxEntries: 1, Now: func() time.Time { return now },
		Workload: func(*tunnel.ConnInfo) string { return "pay/backend-0" }})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Level: new(slog.LevelVar), Connections: tbl.SnapshotAny})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s.Handler())

	code, body := do(t, "GET", base+"/connections")
	if code != 200 || !strings.Contains(body, `"connections": []`) || !strings.Contains(body, `"capacity": 1`) {
		t.Fatalf("empty table: %d %s", code, body)
	}

	h := tbl.Hooks(tunnel.Hooks{})
	ci := &tunnel.ConnInfo{Direction: tunnel.Inbound,
		Source:      spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/frontend"),
		Destination: spiffeid.RequireFromString("spiffe://cluster.local/ns/pay/sa/backend"),
		SourceAddr:  netip.MustParseAddrPort("10.1.0.7:40001"), DestAddr: netip.MustParseAddrPort("10.2.0.9:8080"),
		Policy: "pay/allow-shop", Start: now.Add(-3 * time.Second)}
	h.OnStart(ci)
	h.OnStart(&tunnel.ConnInfo{Direction: tunnel.Outbound, Start: now}) // over the cap of 1
	code, body = do(t, "GET", base+"/connections")
	if code != 200 {
		t.Fatalf("GET /connections: %d %s", code, body)
	}
	var snap connections.Snapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatalf("decode: %v\n%s", err, body)
	}
	if snap.Active != 1 || snap.Dropped != 1 || len(snap.Connections) != 1 {
		t.Fatalf("snapshot = %+v", snap)
	}
	c := snap.Connections[0]
	if c.Direction != "inbound" || c.SourceAddr != "10.1.0.7:40001" || c.DestinationAddr != "10.2.0.9:8080" ||
		c.Workload != "pay/backend-0" || c.SourceIdentity != "spiffe://cluster.local/ns/shop/sa/frontend" ||
		c.DestinationIdentity != "spiffe://cluster.local/ns/pay/sa/backend" || c.Policy != "pay/allow-shop" || c.AgeSeconds != 3 {
		t.Errorf("connection = %+v", c)
	}

	h.OnEnd(ci)
	if _, body := do(t, "GET", base+"/connections"); !strings.Contains(body, `"active": 0`) {
		t.Errorf("after end: %s", body)
	}
	if code, _ := do(t, "POST", base+"/connections"); code != 405 {
		t.Errorf("POST /connections: %d, want 405", code)
	}
}

func TestConnectionsNotConfigured(t *testing.T) {
	s, err := New(Config{Level: new(slog.LevelVar)})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s.Handler())
	code, body := do(t, "GET", base+"/connections")
	if code != 404 || !strings.Contains(body, "no live-connection table") {
		t.Errorf("GET /connections without a table: %d %q", code, body)
	}
}

func TestConnectionsEncodeError(t *testing.T) {
	s, err := New(Config{Level: new(slog.LevelVar), Connections: func() any { return make(chan int) }})
	if err != nil {
		t.Fatal(err)
	}
	code, body := do(t, "GET", serve(t, s.Handler())+"/connections")
	if code != 500 || !strings.Contains(body, "encode") {
		t.Errorf("unencodable snapshot: %d %q", code, body)
	}
}

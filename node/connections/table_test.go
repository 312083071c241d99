package connections

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/ambit-mesh/ambit/node/metrics"
	"github.com/ambit-mesh/ambit/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	t0    = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	srcID = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/frontend")
	dstID = spiffeid.RequireFromString("spiffe://cluster.local/ns/pay/sa/backend")
)

func inbound(i int) *tunnel.ConnInfo {
	return &tunnel.ConnInfo{
		Direction:   tunnel.Inbound,
		Source:      srcID,
		Destination: dstID,
		SourceAddr:  netip.AddrPortFrom(netip.MustParseAddr("10.1.0.7"), uint16(40000+i%20000)),
		DestAddr:    netip.MustParseAddrPort("10.2.0.9:8080"),
		TunnelAddr:  netip.MustParseAddrPort("10.2.0.9:15008"),
		Policy:      "pay/allow-shop",
		Start:       t0.Add(time.Duration(i) * time.Second),
	}
}

func newTable(t *testing.T, cfg Config) *Table {
	t.Helper()
	tbl, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func TestRecordsAndRemoves(t *testing.T) {
	now := t0.Add(90 * time.Second)
	var calls []string
	tbl := newTable(t, Config{Now: func() time.Time { return now }, Workload: func(ci *tunnel.ConnInfo) string {
		if ci.Direction == tunnel.Inbound {
			return "pay/backend-7d9f"
		}
		return "shop/frontend-1"
	}})
	h := tbl.Hooks(tunnel.Hooks{
		OnStart: func(ci *tunnel.ConnInfo) { calls = append(calls, fmt.Sprintf("start:%d", tbl.Len())) },
		OnEnd:   func(ci *tunnel.ConnInfo) { calls = append(calls, fmt.Sprintf("end:%d", tbl.Len())) },
	})

	a := inbound(30) // started later, listed second
	b := &tunnel.ConnInfo{Direction: tunnel.Outbound, Source: srcID, Destination: dstID,
		SourceAddr: netip.MustParseAddrPort("10.1.0.7:51000"), DestAddr: netip.MustParseAddrPort("10.96.0.10:80"),
		TunnelAddr: netip.MustParseAddrPort("10.2.0.9:15008"), Start: t0}
	h.OnStart(a)
	h.OnStart(b)
	failed := inbound(5) // refused before it was established: OnEnd only
	failed.Outcome = tunnel.OutcomeDenied
	h.OnEnd(failed)

	s := tbl.Snapshot()
	if s.Active != 2 || len(s.Connections) != 2 || s.Capacity != DefaultMaxEntries || s.Dropped != 0 {
		t.Fatalf("snapshot = %+v", s)
	}
	want := Conn{ID: 2, Direction: "outbound", SourceAddr: "10.1.0.7:51000", DestinationAddr: "10.96.0.10:80",
		TunnelAddr: "10.2.0.9:15008", Workload: "shop/frontend-1", SourceIdentity: srcID.String(),
		DestinationIdentity: dstID.String(), Start: t0, AgeSeconds: 90}
	if s.Connections[0] != want {
		t.Errorf("first = %+v\nwant    %+v", s.Connections[0], want)
	}
	want = Conn{ID: 1, Direction: "inbound", SourceAddr: "10.1.0.7:40030", DestinationAddr: "10.2.0.9:8080",
		TunnelAddr: "10.2.0.9:15008", Workload: "pay/backend-7d9f", SourceIdentity: srcID.String(),
		DestinationIdentity: dstID.String(), Policy: "pay/allow-shop", Start: t0.Add(30 * time.Second), AgeSeconds: 60}
	if s.Connections[1] != want {
		t.Errorf("second = %+v\nwant     %+v", s.Connections[1], want)
	}

	h.OnEnd(a)
	if s := tbl.Snapshot(); s.Active != 1 || s.Connections[0].ID != 2 {
		t.Fatalf("after end: %+v", s)
	}
	h.OnEnd(b)
	if tbl.Len() != 0 {
		t.Fatalf("Len = %d after every end", tbl.Len())
	}
	// The table records before next.OnStart and removes before next.OnEnd.
	if got := strings.Join(calls, " "); got != "start:1 start:2 end:2 end:1 end:0" {
		t.Errorf("order = %s", got)
	}
	if tbl.Start(nil) || tbl.End(nil) {
		t.Error("nil ConnInfo recorded")
	}
	c := inbound(1)
	if !tbl.Start(c) || tbl.Start(c) || tbl.Len() != 1 {
		t.Error("a second Start of the same connection was recorded")
	}
	if !tbl.End(c) || tbl.End(c) {
		t.Error("End twice removed twice")
	}
	// Hooks with no next hooks.
	h = tbl.Hooks(tunnel.Hooks{})
	h.OnStart(c)
	h.OnEnd(c)
	if tbl.Len() != 0 {
		t.Error("Hooks(zero) left an entry")
	}
}

func TestCapDropsAndCounts(t *testing.T) {
	var logBuf bytes.Buffer
	reg := prometheus.NewRegistry()
	tbl := newTable(t, Config{MaxEntries: 3, Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	cis := make([]*tunnel.ConnInfo, 6)
	recorded := 0
	for i := range cis {
		cis[i] = inbound(i)
		if tbl.Start(cis[i]) {
			recorded++
		}
	}
	if recorded != 3 || tbl.Len() != 3 || tbl.Dropped() != 3 {
		t.Fatalf("recorded %d, Len %d, Dropped %d; want 3, 3, 3", recorded, tbl.Len(), tbl.Dropped())
	}
	s := tbl.Snapshot()
	if s.Active != 3 || s.Capacity != 3 || s.Dropped != 3 {
		t.Errorf("snapshot header = %d/%d/%d", s.Active, s.Capacity, s.Dropped)
	}
	for i, c := range s.Connections { // the first three, in order
		if c.Start != cis[i].Start {
			t.Errorf("entry %d started %v, want %v", i, c.Start, cis[i].Start)
		}
	}
	if n := strings.Count(logBuf.String(), "table full"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logBuf.String())
	}
	// A dropped connection's end is harmless; a recorded one's end makes room.
	if tbl.End(cis[4]) {
		t.Error("End of a dropped connection reported it recorded")
	}
	tbl.End(cis[0])
	if !tbl.Start(cis[5]) || tbl.Len() != 3 {
		t.Errorf("no room after an end: Len %d", tbl.Len())
	}
	if got := gather(t, reg); got["ambit_connections_table_dropped_total"] != 3 || got["ambit_connections_table_entries"] != 3 {
		t.Errorf("metrics = %v, want dropped 3, entries 3", got)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{MaxEntries: -1}); err == nil {
		t.Error("negative MaxEntries accepted")
	}
	reg := prometheus.NewRegistry()
	newTable(t, Config{Registerer: reg})
	var are prometheus.AlreadyRegisteredError
	if _, err := New(Config{Registerer: reg}); !errors.As(err, &are) {
		t.Errorf("second table on one registry: %v", err)
	}
}

// TestConcurrent runs starts, ends and snapshots at once (under -race):
// the cap holds in every snapshot, every connection is either recorded or
// dropped, and the table is empty when all have ended.
func TestConcurrent(t *testing.T) {
	const workers, perWorker, capacity = 8, 1500, 500
	tbl := newTable(t, Config{MaxEntries: capacity})
	var recorded, dropped sync.Map
	var wg sync.WaitGroup
	stop := make(chan struct{})
	snapErr := make(chan error, 1)
	go func() {
		defer close(snapErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := tbl.Snapshot()
			if s.Active > capacity || len(s.Connections) != s.Active {
				snapErr <- fmt.Errorf("snapshot holds %d (listed %d), cap %d", s.Active, len(s.Connections), capacity)
				return
			}
			for i := 1; i < len(s.Connections); i++ {
				if s.Connections[i].Start.Before(s.Connections[i-1].Start) {
					snapErr <- errors.New("snapshot not sorted by start")
					return
				}
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := tbl.Hooks(tunnel.Hooks{})
			live := make([]*tunnel.ConnInfo, 0, 64)
			for i := range perWorker {
				ci := inbound(w*perWorker + i)
				h.OnStart(ci)
				live = append(live, ci)
				if len(live) == cap(live) || i%7 == 0 {
					for _, c := range live {
						h.OnEnd(c)
					}
					live = live[:0]
				}
			}
			for _, c := range live {
				h.OnEnd(c)
			}
		}()
	}
	// A second pass with direct calls counts outcomes exactly.
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker / 3 {
				ci := inbound(i)
				if tbl.Start(ci) {
					recorded.Store(ci, true)
				} else {
					dropped.Store(ci, true)
				}
				if i%2 == 0 {
					if got := tbl.End(ci); got != isStored(&recorded, ci) {
						t.Errorf("End = %v for a connection recorded %v", got, !got)
					}
					recorded.Delete(ci)
					dropped.Delete(ci)
				}
			}
			_ = w
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-snapErr; err != nil {
		t.Fatal(err)
	}
	nRec := 0
	recorded.Range(func(k, _ any) bool { nRec++; tbl.End(k.(*tunnel.ConnInfo)); return true })
	if tbl.Len() != 0 {
		t.Fatalf("Len = %d after every connection ended (%d recorded at the end)", tbl.Len(), nRec)
	}
	if tbl.count.Load() != 0 {
		t.Fatalf("count = %d, want 0", tbl.count.Load())
	}
}

func isStored(m *sync.Map, k any) bool { _, ok := m.Load(k); return ok }

// TestNoSecretsInSnapshot: headers, errors and reasons of a connection
// (the only free text a ConnInfo carries) never reach the snapshot, and
// the JSON has exactly the documented fields.
func TestNoSecretsInSnapshot(t *testing.T) {
	tbl := newTable(t, Config{})
	ci := inbound(0)
	ci.Baggage = tunnel.ParseBaggage("token=SECRET-BAGGAGE")
	ci.Reason = "SECRET-REASON"
	ci.Err = errors.New("SECRET-ERR")
	tbl.Start(ci)
	b, err := json.Marshal(tbl.SnapshotAny())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("SECRET")) {
		t.Fatalf("snapshot leaks free text: %s", b)
	}
	var raw struct {
		Connections []map[string]any `json:"connections"`
	}
	if err := json.Unmarshal(b, &raw); err != nil || len(raw.Connections) != 1 {
		t.Fatalf("decode: %v %s", err, b)
	}
	keys := make([]string, 0)
	for k := range raw.Connections[0] {
		keys = append(keys, k)
	}
	want := map[string]bool{"id": true, "direction": true, "source_addr": true, "destination_addr": true, "tunnel_addr": true,
		"source_identity": true, "destination_identity": true, "policy": true, "start": true, "age_seconds": true,
		"bytes_sent": true, "bytes_received": true}
	for _, k := range keys {
		if !want[k] {
			t.Errorf("unexpected field %q", k)
		}
	}
	if len(keys) != len(want) {
		t.Errorf("fields %v, want %d of them", keys, len(want))
	}
}

// TestComposesWithMetrics: one hooks value feeds the table and the
// metrics; both see the connection.
func TestComposesWithMetrics(t *testing.T) {
	m, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tbl := newTable(t, Config{Registerer: m.Registry()})
	h := tbl.Hooks(m.NodeHooks())
	ci := inbound(0)
	h.OnStart(ci)
	if tbl.Len() != 1 {
		t.Fatal("not recorded")
	}
	ci.BytesSent, ci.BytesRecv = 10, 20
	h.OnEnd(ci)
	if tbl.Len() != 0 {
		t.Fatal("not removed")
	}
	got := gather(t, m.Registry())
	for name, want := range map[string]float64{
		"ambit_tcp_connections_opened_total": 1, "ambit_tcp_connections_closed_total": 1,
		"ambit_tcp_sent_bytes_total": 10, "ambit_tcp_received_bytes_total": 20,
		"ambit_connections_table_entries": 0, "ambit_connections_table_dropped_total": 0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
}

// gather sums each counter and gauge family of reg by name.
func gather(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			if c := mt.GetCounter(); c != nil {
				got[mf.GetName()] += c.GetValue()
			}
			if g := mt.GetGauge(); g != nil {
				got[mf.GetName()] += g.GetValue()
			}
		}
	}
	return got
}

func TestLocalWorkload(t *testing.T) {
	names := map[netip.Addr]string{netip.MustParseAddr("10.2.0.9"): "pay/backend-0", netip.MustParseAddr("10.1.0.7"): "shop/frontend-1"}
	f := LocalWorkload(func(a netip.Addr) (string, bool) { n, ok := names[a]; return n, ok })
	in := inbound(0) // 10.1.0.7 -> 10.2.0.9
	if got := f(in); got != "pay/backend-0" {
		t.Errorf("inbound: %q", got)
	}
	out := &tunnel.ConnInfo{Direction: tunnel.Outbound, SourceAddr: netip.MustParseAddrPort("[::ffff:10.1.0.7]:5000"),
		DestAddr: netip.MustParseAddrPort("10.96.0.10:80")}
	if got := f(out); got != "shop/frontend-1" {
		t.Errorf("outbound (mapped address): %q", got)
	}
	if got := f(&tunnel.ConnInfo{Direction: tunnel.Outbound}); got != "" {
		t.Errorf("no address: %q", got)
	}
	if got := f(&tunnel.ConnInfo{Direction: tunnel.Inbound, DestAddr: netip.MustParseAddrPort("10.9.9.9:1")}); got != "" {
		t.Errorf("unknown address: %q", got)
	}
}

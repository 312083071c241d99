package connections

import (
	"testing"

	"github.com/ambit-mesh/ambit/tunnel"
)

// BenchmarkHooks: one connection's OnStart and OnEnd through Table.Hooks
// (no next hooks) on a table already holding 1,000 connections, in
// parallel on every core.
func BenchmarkHooks(b *testing.B) {
	tbl, err := New(Config{Workload: func(*tunnel.ConnInfo) string { return "pay/backend-7d9f" }})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		tbl.Start(inbound(i))
	}
	h := tbl.Hooks(tunnel.Hooks{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ci := inbound(0)
		for pb.Next() {
			h.OnStart(ci)
			h.OnEnd(ci)
		}
	})
	if tbl.Len() != 1000 {
		b.Fatalf("Len = %d", tbl.Len())
	}
}

// BenchmarkSnapshot: a snapshot of a full table at the default cap, what
// one GET /connections costs before JSON encoding.
func BenchmarkSnapshot(b *testing.B) {
	tbl, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range DefaultMaxEntries {
		tbl.Start(inbound(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		if s := tbl.Snapshot(); s.Active != DefaultMaxEntries {
			b.Fatal(s.Active)
		}
	}
}

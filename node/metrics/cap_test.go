package metrics

import (
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/tunnel"
)

// TestSeriesCap feeds many distinct principals through a small cap: the
// label sets stop growing, later connections are counted under "other",
// every connection is still counted, and the overflow is counted.
func TestSeriesCap(t *testing.T) {
	const capN, conns = 20, 200
	m := newMetrics(t, Config{MaxSeries: capN})
	h := m.TunnelHooks(ReporterDestination)
	for i := range conns {
		ci := conn(tunnel.OutcomeOK)
		ci.Source = spiffeid.RequireFromString(fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/sa%d", i, i))
		h.OnStart(ci)
		h.OnEnd(ci)
	}
	// Each connection makes one label set (opened and closed share it:
	// response_flags "-"). 20 exact sets, then principal-collapsed sets
	// (one per namespace) up to the reserve of 20/8 = 2, then one fully
	// collapsed set.
	if got, limit := m.Series(), capN+capN/8+1; got > limit {
		t.Fatalf("Series() = %d, want <= %d", got, limit)
	}
	r := m.Registry()
	if got, _ := value(t, r, "ambit_tcp_connections_closed_total", nil); got != conns {
		t.Fatalf("closed total = %v, want %d (collapsing must not lose counts)", got, conns)
	}
	if got, _ := value(t, r, "ambit_metrics_label_overflow_total", nil); got != conns-capN {
		t.Fatalf("overflow = %v, want %d", got, conns-capN)
	}
	other, _ := value(t, r, "ambit_tcp_connections_closed_total", map[string]string{"source_principal": "other", "destination_principal": "other"})
	if other != conns-capN {
		t.Fatalf("closed{principal=other} = %v, want %d", other, conns-capN)
	}
	all, _ := value(t, r, "ambit_tcp_connections_closed_total", map[string]string{"source_workload_namespace": "other", "source_principal": "other"})
	if all < conns-capN-capN/8 {
		t.Fatalf("closed{namespace=other} = %v, want >= %d", all, conns-capN-capN/8)
	}
	// A label set that existed before the cap keeps its own series.
	ci := conn(tunnel.OutcomeOK)
	ci.Source = spiffeid.RequireFromString("spiffe://cluster.local/ns/ns0/sa/sa0")
	h.OnEnd(ci)
	if got, _ := value(t, r, "ambit_tcp_connections_closed_total", map[string]string{"source_principal": "cluster.local/ns/ns0/sa/sa0"}); got != 2 {
		t.Fatalf("closed{ns0} = %v, want 2", got)
	}
}

// TestSeriesCapDefault checks the default cap holds at 10,000 label sets.
func TestSeriesCapDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 12,000 series")
	}
	m := newMetrics(t, Config{})
	h := m.TunnelHooks(ReporterSource)
	for i := range DefaultMaxSeries + 2000 {
		ci := conn(tunnel.OutcomeOK)
		ci.Direction = tunnel.Outbound
		ci.Source = spiffeid.RequireFromString(fmt.Sprintf("spiffe://cluster.local/ns/shop/sa/sa%d", i))
		h.OnEnd(ci)
	}
	if got := m.Series(); got != DefaultMaxSeries+1 {
		t.Fatalf("Series() = %d, want %d (the cap and one collapsed set)", got, DefaultMaxSeries+1)
	}
	if got, _ := value(t, m.Registry(), "ambit_metrics_label_overflow_total", nil); got != 2000 {
		t.Fatalf("overflow = %v, want 2000", got)
	}
}

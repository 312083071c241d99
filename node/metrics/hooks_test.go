package metrics

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/tunnel"
)

var (
	srcID = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/frontend")
	dstID = spiffeid.RequireFromString("spiffe://cluster.local/ns/pay/sa/backend")
)

func conn(outcome string) *tunnel.ConnInfo {
	return &tunnel.ConnInfo{
		Direction:   tunnel.Inbound,
		Source:      srcID,
		Destination: dstID,
		SourceAddr:  netip.MustParseAddrPort("10.1.2.3:40000"),
		DestAddr:    netip.MustParseAddrPort("10.4.5.6:8080"),
		TunnelAddr:  netip.MustParseAddrPort("10.4.5.6:15008"),
		Start:       time.Unix(1700000000, 0),
		Duration:    1500 * time.Millisecond,
		BytesSent:   100,
		BytesRecv:   2500,
		Outcome:     outcome,
	}
}

func TestHooksCountAndLabel(t *testing.T) {
	m := newMetrics(t, Config{Workloads: func(*tunnel.ConnInfo) WorkloadLabels {
		return WorkloadLabels{SourceWorkload: "frontend", SourceApp: "web", DestinationWorkload: "backend",
			DestinationService: "backend.pay.svc.cluster.local"}
	}})
	h := m.TunnelHooks(ReporterDestination)
	ok := conn(tunnel.OutcomeOK)
	h.OnStart(ok)
	h.OnEnd(ok)
	reset := conn(tunnel.OutcomeOK)
	h.OnStart(reset)
	reset.Outcome = tunnel.OutcomeReset // as the tunnel sets it when a side resets
	h.OnEnd(reset)
	denied := conn(tunnel.OutcomeDenied)
	denied.BytesSent, denied.BytesRecv = 0, 0
	h.OnEnd(denied)

	base := map[string]string{
		"reporter": "destination", "source_workload_namespace": "shop", "source_principal": "cluster.local/ns/shop/sa/frontend",
		"destination_workload_namespace": "pay", "destination_principal": "cluster.local/ns/pay/sa/backend",
		"destination_service": "backend.pay.svc.cluster.local", "direction": "inbound", "connection_security_policy": "mutual_tls",
		"source_workload": "frontend", "source_app": "web", "destination_workload": "backend", "destination_app": "unknown",
	}
	with := func(k, v string) map[string]string {
		out := map[string]string{k: v}
		for a, b := range base {
			out[a] = b
		}
		return out
	}
	r := m.Registry()
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ambit_tcp_connections_opened_total", with("response_flags", "-"), 2},
		{"ambit_tcp_connections_closed_total", with("response_flags", "-"), 1},
		{"ambit_tcp_connections_closed_total", with("response_flags", "RESET"), 1},
		{"ambit_tcp_connections_failed_total", with("response_flags", "DENY"), 1},
		{"ambit_tcp_connections_failed_total", with("response_flags", "-"), 0},
		{"ambit_tcp_sent_bytes_total", base, 200},
		{"ambit_tcp_received_bytes_total", base, 5000},
	} {
		if got, _ := value(t, r, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels["response_flags"], got, c.want)
		}
	}
	// No label anywhere carries an address or a port.
	text := scrape(t, m.Handler())
	addr := regexp.MustCompile(`\b\d+\.\d+\.\d+\.\d+\b|:(8080|15008|40000)\b`)
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "ambit_tcp_") && addr.MatchString(l) {
			t.Errorf("address in a label: %s", l)
		}
	}
}

func TestHooksUnknownIdentities(t *testing.T) {
	m := newMetrics(t, Config{})
	h := m.TunnelHooks(ReporterDestination)
	ci := conn(tunnel.OutcomeTLSFailure)
	ci.Source, ci.Destination = spiffeid.ID{}, spiffeid.RequireFromString("spiffe://cluster.local/gateway")
	h.OnEnd(ci)
	got, found := value(t, m.Registry(), "ambit_tcp_connections_failed_total", map[string]string{
		"source_principal": "unknown", "source_workload_namespace": "unknown",
		"destination_principal": "cluster.local/gateway", "destination_workload_namespace": "unknown",
		"connection_security_policy": "unknown", "response_flags": "TLS_FAILURE", "destination_service": "unknown",
	})
	if !found || got != 1 {
		t.Fatalf("failed{unknown...} = %v (found %v), want 1", got, found)
	}
}

func TestTunnelHooksBadReporter(t *testing.T) {
	m := newMetrics(t, Config{})
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "reporter") {
			t.Fatalf("recover = %v, want a panic naming the reporter", r)
		}
	}()
	m.TunnelHooks("client")
}

func TestFailedOutcomes(t *testing.T) {
	for o, want := range map[string]bool{
		tunnel.OutcomeOK: false, tunnel.OutcomeReset: false, tunnel.OutcomeShutdown: false,
		tunnel.OutcomeDenied: true, tunnel.OutcomeConnect: true, tunnel.OutcomeTLSFailure: true,
		tunnel.OutcomeIdentityError: true, tunnel.OutcomeBadRequest: true, tunnel.OutcomeUpstreamRefused: true,
	} {
		if got := failedOutcome(o); got != want {
			t.Errorf("failedOutcome(%q) = %v, want %v", o, got, want)
		}
	}
}

// TestAddressesNeverLabels: names from the tables that are in fact
// addresses are reported as "unknown".
func TestAddressesNeverLabels(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3": Unknown, "10.1.2.3:8080": Unknown, "fd00::1": Unknown, "[fd00::1]:80": Unknown, "::1": Unknown,
		"": Unknown, "backend": "backend", "1password": "1password", "backend.pay.svc.cluster.local": "backend.pay.svc.cluster.local",
	} {
		if got := bounded(in); got != want {
			t.Errorf("bounded(%q) = %q, want %q", in, got, want)
		}
	}
	m := newMetrics(t, Config{Workloads: func(ci *tunnel.ConnInfo) WorkloadLabels {
		return WorkloadLabels{SourceWorkload: ci.SourceAddr.Addr().String(), DestinationService: ci.DestAddr.String()}
	}})
	m.TunnelHooks(ReporterDestination).OnEnd(conn(tunnel.OutcomeOK))
	if got, found := value(t, m.Registry(), "ambit_tcp_connections_closed_total",
		map[string]string{"source_workload": "unknown", "destination_service": "unknown"}); !found || got != 1 {
		t.Fatalf("closed{unknown} = %v (found %v), want 1", got, found)
	}
}

// TestNodeHooksReporterByDirection: the data path's single Hooks value
// reports inbound connections as the destination and outbound ones as the
// source.
func TestNodeHooksReporterByDirection(t *testing.T) {
	m := newMetrics(t, Config{})
	h := m.NodeHooks()
	in, out := conn(tunnel.OutcomeOK), conn(tunnel.OutcomeOK)
	out.Direction = tunnel.Outbound
	h.OnStart(in)
	h.OnEnd(in)
	h.OnStart(out)
	h.OnStart(out)
	r := m.Registry()
	for reporter, want := range map[string]float64{"destination": 1, "source": 2} {
		got, _ := value(t, r, "ambit_tcp_connections_opened_total", map[string]string{"reporter": reporter})
		if got != want {
			t.Errorf("opened{reporter=%s} = %v, want %v", reporter, got, want)
		}
	}
}

// TestRefusalsCounted: the tunnel's hostile-peer refusals are counted by
// reason, through the node's hooks, with no identity or address label.
func TestRefusalsCounted(t *testing.T) {
	m := newMetrics(t, Config{})
	h := m.NodeHooks()
	for range 3 {
		h.OnRefuse(tunnel.RefuseInfo{Reason: tunnel.RefuseRapidReset, Peer: srcID, PeerAddr: netip.MustParseAddrPort("10.1.2.3:4")})
	}
	h.OnRefuse(tunnel.RefuseInfo{Reason: tunnel.RefuseLoop, Peer: srcID})
	if v, ok := value(t, m.Registry(), "ambit_hbone_refused_total", map[string]string{"reason": tunnel.RefuseRapidReset}); !ok || v != 3 {
		t.Errorf("rapid_reset refusals %v (found %v), want 3", v, ok)
	}
	if v, ok := value(t, m.Registry(), "ambit_hbone_refused_total", map[string]string{"reason": tunnel.RefuseLoop}); !ok || v != 1 {
		t.Errorf("loop refusals %v (found %v), want 1", v, ok)
	}
	if text := scrape(t, m.Handler()); strings.Contains(line(text, "ambit_hbone_refused_total"), "frontend") {
		t.Error("an identity became a label of ambit_hbone_refused_total")
	}
}

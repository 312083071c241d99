package metrics

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/tunnel"
)

// labelsOf returns the label sets of the named metric.
func labelsOf(t *testing.T, m *Metrics, name string) []map[string]string {
	t.Helper()
	mfs, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range mt.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			out = append(out, l)
		}
	}
	return out
}

// ztunnelLabels is the label set of ztunnel's CommonTrafficLabels without
// the locality labels (src/proxy/metrics.rs), sorted.
var ztunnelLabels = []string{
	"connection_security_policy",
	"destination_app", "destination_canonical_revision", "destination_canonical_service", "destination_cluster",
	"destination_principal", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_version", "destination_workload", "destination_workload_namespace",
	"reporter", "request_protocol", "response_flags",
	"source_app", "source_canonical_revision", "source_canonical_service", "source_cluster", "source_principal",
	"source_version", "source_workload", "source_workload_namespace",
}

func TestIstioLabelsAndValues(t *testing.T) {
	m := newMetrics(t, Config{Workloads: func(ci *tunnel.ConnInfo) WorkloadLabels {
		return WorkloadLabels{SourceWorkload: "frontend", SourceApp: "web", SourceNamespace: "shop",
			SourceCanonicalService: "web", SourceCanonicalRevision: "v2",
			DestinationWorkload: "backend", DestinationNamespace: "pay",
			DestinationService: "backend.pay.svc.cluster.local", DestinationServiceName: "backend", DestinationServiceNamespace: "pay"}
	}})
	h := m.TunnelHooks(ReporterDestination)
	ok := conn(tunnel.OutcomeOK)
	h.OnStart(ok)
	h.OnEnd(ok)
	got := labelsOf(t, m, "istio_tcp_connections_opened_total")
	if len(got) != 1 {
		t.Fatalf("%d opened series, want 1: %v", len(got), got)
	}
	var names []string
	for k := range got[0] {
		names = append(names, k)
	}
	slices.Sort(names)
	if !slices.Equal(names, ztunnelLabels) {
		t.Fatalf("labels %v\nwant   %v", names, ztunnelLabels)
	}
	for k, want := range map[string]string{
		"reporter": "destination", "request_protocol": "tcp", "response_flags": "-", "connection_security_policy": "mutual_tls",
		"source_principal": "spiffe://cluster.local/ns/shop/sa/frontend", "destination_principal": "spiffe://cluster.local/ns/pay/sa/backend",
		"source_workload": "frontend", "source_workload_namespace": "shop", "source_canonical_service": "web", "source_canonical_revision": "v2",
		"source_app": "web", "source_version": "v2", "source_cluster": "Kubernetes",
		// A known workload without canonical labels: its workload name and "latest".
		"destination_workload": "backend", "destination_canonical_service": "backend", "destination_canonical_revision": "latest",
		"destination_app": "backend", "destination_version": "latest", "destination_cluster": "Kubernetes",
		"destination_service": "backend.pay.svc.cluster.local", "destination_service_name": "backend", "destination_service_namespace": "pay",
	} {
		if got[0][k] != want {
			t.Errorf("%s = %q, want %q", k, got[0][k], want)
		}
	}
}

// TestIstioOutcomes: ztunnel counts every handled connection as opened and
// closed, failures also in istio_tcp_connections_failed_total, with its
// own response flags; a plaintext connection is "none".
func TestIstioOutcomes(t *testing.T) {
	m := newMetrics(t, Config{})
	h := m.TunnelHooks(ReporterDestination)
	denied := conn(tunnel.OutcomeDenied)
	denied.BytesSent, denied.BytesRecv = 0, 0
	h.OnEnd(denied)
	revoked := conn(tunnel.OutcomeOK)
	h.OnStart(revoked)
	revoked.Outcome = tunnel.OutcomeRevoked
	h.OnEnd(revoked)
	reset := conn(tunnel.OutcomeOK)
	h.OnStart(reset)
	reset.Outcome = tunnel.OutcomeReset
	h.OnEnd(reset)
	for _, c := range []struct {
		name  string
		flags string
		want  float64
	}{
		{"istio_tcp_connections_opened_total", "DENY", 1},
		{"istio_tcp_connections_closed_total", "DENY", 2},
		{"istio_tcp_connections_failed_total", "DENY", 2},
		{"istio_tcp_connections_opened_total", "-", 2},
		{"istio_tcp_connections_closed_total", "-", 1},
		{"istio_tcp_connections_failed_total", "-", 0},
		{"ambit_tcp_connections_closed_total", "REVOKED", 1},
		{"ambit_tcp_connections_closed_total", "RESET", 1},
		{"ambit_tcp_connections_failed_total", "DENY", 1},
	} {
		if got, _ := value(t, m, c.name, map[string]string{"response_flags": c.flags}); got != c.want {
			t.Errorf("%s{response_flags=%q} = %v, want %v", c.name, c.flags, got, c.want)
		}
	}
	// The bytes of a connection go to the series it opened under.
	if got, _ := value(t, m, "istio_tcp_received_bytes_total", map[string]string{"response_flags": "-"}); got != 200 {
		t.Errorf("received bytes{-} = %v, want 200 (two connections of 100)", got)
	}
	if got, _ := value(t, m, "istio_tcp_sent_bytes_total", map[string]string{"response_flags": "-"}); got != 5000 {
		t.Errorf("sent bytes{-} = %v, want 5000", got)
	}
}

// TestPlaintextIsNone: a connection carried without a tunnel is
// connection_security_policy="none" (Istio's value for plaintext), not
// "unknown", in both metric families and the access log.
func TestPlaintextIsNone(t *testing.T) {
	m := newMetrics(t, Config{})
	h := m.NodeHooks()
	in := conn(tunnel.OutcomeOK) // plaintext inbound: no source identity, no tunnel
	in.Source, in.TunnelAddr = spiffeid.ID{}, netip.AddrPort{}
	h.OnStart(in)
	h.OnEnd(in)
	out := conn(tunnel.OutcomeOK) // passthrough outbound: no destination identity
	out.Direction, out.Destination, out.TunnelAddr = tunnel.Outbound, spiffeid.ID{}, netip.AddrPort{}
	h.OnStart(out)
	h.OnEnd(out)
	local := conn(tunnel.OutcomeOK) // same-node shortcut: both identities held by the daemon, no tunnel
	local.TunnelAddr = netip.AddrPort{}
	h.OnEnd(local)
	if got, _ := value(t, m, "istio_tcp_connections_closed_total", map[string]string{"connection_security_policy": "mutual_tls"}); got != 1 {
		t.Errorf("same-node closed{mutual_tls} = %v, want 1", got)
	}
	for _, name := range []string{"istio_tcp_connections_closed_total", "ambit_tcp_connections_closed_total"} {
		for _, r := range []string{ReporterSource, ReporterDestination} {
			if got, _ := value(t, m, name, map[string]string{"reporter": r, "connection_security_policy": "none"}); got != 1 {
				t.Errorf("%s{reporter=%s,connection_security_policy=none} = %v, want 1", name, r, got)
			}
		}
	}
}

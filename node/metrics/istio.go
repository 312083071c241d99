package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambit-mesh/ambit/tunnel"
)

// DefaultClusterID is source_cluster/destination_cluster of a known
// workload, Istio's default cluster name.
const DefaultClusterID = "Kubernetes"

// istioLabels are the labels of Istio's standard TCP metrics in ztunnel's
// order (src/proxy/metrics.rs, CommonTrafficLabels). ztunnel 1.26 and later
// also add source/destination region and zone from the Node's topology
// labels; ambit does not watch Nodes and leaves them out.
var istioLabels = []string{
	"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
	"source_principal", "source_app", "source_version", "source_cluster",
	"destination_service", "destination_service_namespace", "destination_service_name",
	"destination_workload", "destination_canonical_service", "destination_canonical_revision", "destination_workload_namespace",
	"destination_principal", "destination_app", "destination_version", "destination_cluster",
	"request_protocol", "response_flags", "connection_security_policy",
}

// istioPrincipal is the SPIFFE URI form Istio's metrics carry.
func istioPrincipal(p string) string {
	if p == Unknown || p == Other {
		return p
	}
	return "spiffe://" + p
}

// istioValues follows ztunnel: *_app is the canonical service and
// *_version the canonical revision.
func (k *labelKey) istioValues() []string {
	s, d := &k.src, &k.dst
	return []string{k.reporter,
		s.workload, s.canonSvc, s.canonRev, s.ns, istioPrincipal(s.principal), s.canonSvc, s.canonRev, s.cluster,
		k.dstService, k.dstServiceNS, k.dstServiceName,
		d.workload, d.canonSvc, d.canonRev, d.ns, istioPrincipal(d.principal), d.canonSvc, d.canonRev, d.cluster,
		"tcp", istioFlags(k.flags), k.policy}
}

// istioFlags maps ambit's outcomes to ztunnel's response flags: "-",
// DENY, CONNECT, TLS_FAILURE, IDENTITY_ERROR. A reset mid-stream is a
// normal end for ztunnel (it ignores resets, broken pipes and EOFs), a
// revoked connection a late authorization rejection (DENY), and anything
// that kept the connection from its destination a connection failure.
func istioFlags(flags string) string {
	switch flags {
	case NoFlags, tunnel.OutcomeReset:
		return NoFlags
	case tunnel.OutcomeDenied, tunnel.OutcomeRevoked:
		return "DENY"
	case tunnel.OutcomeTLSFailure, tunnel.OutcomeIdentityError:
		return flags
	}
	return "CONNECT"
}

// series is a label set's resolved counters, ambit's and Istio's.
type series struct {
	opened, closed, failed, sent, recv      prometheus.Counter
	iOpened, iClosed, iFailed, iSent, iRecv prometheus.Counter
	// istioFailed: the label set's ztunnel response flag is a failure.
	istioFailed bool
	key         labelKey
}

func (m *Metrics) newSeries(k *labelKey) *series {
	a, i := k.ambitValues(), k.istioValues()
	return &series{
		opened: m.opened.WithLabelValues(a...), closed: m.closed.WithLabelValues(a...), failed: m.failed.WithLabelValues(a...),
		sent: m.sent.WithLabelValues(a...), recv: m.recv.WithLabelValues(a...),
		iOpened: m.iOpened.WithLabelValues(i...), iClosed: m.iClosed.WithLabelValues(i...), iFailed: m.iFailed.WithLabelValues(i...),
		// Istio's byte metrics are named from the server's point of view:
		// received is the request direction (towards the destination),
		// sent the response direction, for both reporters.
		iRecv: m.iRecv.WithLabelValues(i...), iSent: m.iSent.WithLabelValues(i...),
		istioFailed: istioFlags(k.flags) != NoFlags,
		key:         *k,
	}
}

// addBytes counts bytes towards the destination (toDst) and from it.
func (s *series) addBytes(toDst, fromDst int64) {
	if toDst > 0 {
		s.sent.Add(float64(toDst))
		s.iRecv.Add(float64(toDst))
	}
	if fromDst > 0 {
		s.recv.Add(float64(fromDst))
		s.iSent.Add(float64(fromDst))
	}
}

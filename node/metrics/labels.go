package metrics

import (
	"net/netip"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/tunnel"
)

// Reporters: which end of the tunnel reports a connection.
const (
	ReporterSource      = "source"      // the client endpoint (outbound)
	ReporterDestination = "destination" // the server endpoint (inbound)
)

// Label values with a fixed meaning.
const (
	Unknown   = "unknown"    // no verified identity, or not a workload identity
	Other     = "other"      // collapsed by the label set cap
	MutualTLS = "mutual_tls" // both identities verified by the tunnel's TLS
	NoFlags   = "-"          // response_flags of a connection that ended normally
)

var labelNames = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_service",
	"direction", "connection_security_policy", "response_flags",
}

// WorkloadLabels are the labels only the node's tables know. Empty fields
// are reported as "unknown".
type WorkloadLabels struct {
	SourceWorkload, SourceApp           string // e.g. "frontend", "shop"
	DestinationWorkload, DestinationApp string
	DestinationService                  string // e.g. "backend.pay.svc.cluster.local"
}

// labelKey holds one connection's label values, in labelNames order.
type labelKey struct {
	reporter, srcWorkload, srcNS, srcPrincipal, srcApp, dstWorkload, dstNS, dstPrincipal, dstApp, dstService,
	direction, policy, flags string
}

func (k *labelKey) values() []string {
	return []string{k.reporter, k.srcWorkload, k.srcNS, k.srcPrincipal, k.srcApp, k.dstWorkload, k.dstNS, k.dstPrincipal,
		k.dstApp, k.dstService, k.direction, k.policy, k.flags}
}

// bounded returns v, or "unknown" when v is empty or an address: an
// address or port must never become a label value.
func bounded(v string) string {
	if v == "" {
		return Unknown
	}
	if c := v[0]; (c >= '0' && c <= '9') || c == '[' || strings.IndexByte(v, ':') >= 0 {
		if _, err := netip.ParseAddr(v); err == nil {
			return Unknown
		}
		if _, err := netip.ParseAddrPort(v); err == nil {
			return Unknown
		}
	}
	return v
}

// series is a label set's resolved counters.
type series struct {
	opened, closed, failed, sent, recv prometheus.Counter
}

// principal is the Istio form of a SPIFFE ID: without "spiffe://".
func principal(id spiffeid.ID) string {
	if id.IsZero() {
		return Unknown
	}
	return strings.TrimPrefix(id.String(), "spiffe://")
}

func namespace(id spiffeid.ID) string {
	ns, _, err := identity.ParseWorkload(id)
	if err != nil {
		return Unknown
	}
	return ns
}

// failedOutcome reports whether an outcome means the connection ended
// before it was established (OnStart not called).
func failedOutcome(o string) bool {
	switch o {
	case tunnel.OutcomeDenied, tunnel.OutcomeConnect, tunnel.OutcomeTLSFailure, tunnel.OutcomeIdentityError,
		tunnel.OutcomeBadRequest, tunnel.OutcomeUpstreamRefused:
		return true
	}
	return false
}

func (m *Metrics) key(reporter string, ci *tunnel.ConnInfo) labelKey {
	k := labelKey{
		reporter:     reporter,
		srcNS:        m.ns.namespace(ci.Source),
		srcPrincipal: principal(ci.Source),
		dstNS:        m.ns.namespace(ci.Destination),
		dstPrincipal: principal(ci.Destination),
		srcWorkload:  Unknown,
		srcApp:       Unknown,
		dstWorkload:  Unknown,
		dstApp:       Unknown,
		dstService:   Unknown,
		direction:    string(ci.Direction),
		policy:       Unknown,
		flags:        ci.Outcome,
	}
	if !ci.Source.IsZero() && !ci.Destination.IsZero() {
		k.policy = MutualTLS
	}
	if k.flags == tunnel.OutcomeOK {
		k.flags = NoFlags
	}
	if k.direction == "" {
		k.direction = Unknown
	}
	if f := m.cfg.Workloads; f != nil {
		w := f(ci)
		k.srcWorkload, k.srcApp = bounded(w.SourceWorkload), bounded(w.SourceApp)
		k.dstWorkload, k.dstApp = bounded(w.DestinationWorkload), bounded(w.DestinationApp)
		k.dstService = bounded(w.DestinationService)
	}
	return k
}

// lookup returns the counters for k, creating them within the cap. The
// second result reports that k was collapsed.
func (m *Metrics) lookup(k labelKey) (*series, bool) {
	m.mu.RLock()
	s := m.series[k]
	m.mu.RUnlock()
	if s != nil {
		return s, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.series[k]; s != nil {
		return s, false
	}
	collapsed := false
	if len(m.series) >= m.cfg.MaxSeries {
		collapsed = true
		k.srcPrincipal, k.dstPrincipal = Other, Other
		k.srcWorkload, k.dstWorkload = Other, Other
		if s := m.series[k]; s != nil {
			return s, true
		}
		// The principal-collapsed sets may grow by a reserve of an eighth
		// of the cap; past that every workload label is "other", which
		// leaves only reporter x direction x policy x flags (< 100 sets).
		if len(m.series) >= m.cfg.MaxSeries+m.cfg.MaxSeries/8 {
			k.srcNS, k.dstNS, k.srcApp, k.dstApp, k.dstService = Other, Other, Other, Other, Other
			if s := m.series[k]; s != nil {
				return s, true
			}
		}
		if !m.overflown {
			m.overflown = true
			m.log.Warn("metrics: connection label set cap reached; principals now reported as \"other\"",
				"max_series", m.cfg.MaxSeries)
		}
	}
	v := k.values()
	s = &series{
		opened: m.opened.WithLabelValues(v...),
		closed: m.closed.WithLabelValues(v...),
		failed: m.failed.WithLabelValues(v...),
		sent:   m.sent.WithLabelValues(v...),
		recv:   m.recv.WithLabelValues(v...),
	}
	m.series[k] = s
	return s, collapsed
}

// Series reports how many distinct connection label sets exist.
func (m *Metrics) Series() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.series)
}

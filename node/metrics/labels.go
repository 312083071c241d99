package metrics

import (
	"net/netip"
	"strings"

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
	None      = "none"       // connection_security_policy of a connection carried in plaintext (no tunnel)
	NoFlags   = "-"          // response_flags of a connection that ended normally
)

// ambitLabels are the labels of the ambit_tcp_* metrics.
var ambitLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_service",
	"direction", "connection_security_policy", "response_flags",
}

// WorkloadLabels are the labels only the node's tables know. Empty fields
// are reported as "unknown" (CanonicalRevision: as Istio, "latest" when the
// workload is known).
type WorkloadLabels struct {
	SourceWorkload, SourceApp           string // e.g. "frontend", "shop"
	DestinationWorkload, DestinationApp string
	// DestinationService is the Service's hostname, e.g.
	// "backend.pay.svc.cluster.local"; DestinationServiceName and
	// DestinationServiceNamespace its name and namespace.
	DestinationService                                  string
	DestinationServiceName, DestinationServiceNamespace string
	// SourceNamespace and DestinationNamespace are the pods' namespaces
	// when the tables know them; otherwise the namespace of the verified
	// SPIFFE ID is reported.
	SourceNamespace, DestinationNamespace string
	// Istio's canonical service and revision of each side (see
	// CanonicalService).
	SourceCanonicalService, SourceCanonicalRevision           string
	DestinationCanonicalService, DestinationCanonicalRevision string
}

// peerKey is one side's label values.
type peerKey struct {
	workload, ns, principal, app, canonSvc, canonRev, cluster string
}

// labelKey holds everything a connection's label sets (ambit_ and
// istio_) are made of.
type labelKey struct {
	reporter                                 string
	src, dst                                 peerKey
	dstService, dstServiceName, dstServiceNS string
	direction, policy, flags                 string
}

func (k *labelKey) ambitValues() []string {
	return []string{k.reporter, k.src.workload, k.src.ns, k.src.principal, k.src.app,
		k.dst.workload, k.dst.ns, k.dst.principal, k.dst.app, k.dstService, k.direction, k.policy, k.flags}
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

// principal is the Istio access-log form of a SPIFFE ID: without
// "spiffe://" (the ambit_ metrics use it; istio_ metrics add the scheme).
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

// securityPolicy is connection_security_policy: mutual_tls when both
// identities are known (verified by the tunnel's TLS, or held by the
// daemon for a same-node connection); otherwise a connection carried
// without a tunnel (no HBONE listener address) is plaintext, "none" as
// Istio's proxies report it, and a tunnel that failed before both were
// verified is "unknown".
func securityPolicy(ci *tunnel.ConnInfo) string {
	switch {
	case !ci.Source.IsZero() && !ci.Destination.IsZero():
		return MutualTLS
	case !ci.TunnelAddr.IsValid():
		return None
	}
	return Unknown
}

func (m *Metrics) key(reporter string, ci *tunnel.ConnInfo) labelKey {
	k := labelKey{
		reporter:   reporter,
		src:        m.peer(ci.Source),
		dst:        m.peer(ci.Destination),
		dstService: Unknown, dstServiceName: Unknown, dstServiceNS: Unknown,
		direction: string(ci.Direction),
		policy:    securityPolicy(ci),
		flags:     ci.Outcome,
	}
	if k.flags == tunnel.OutcomeOK {
		k.flags = NoFlags
	}
	if k.direction == "" {
		k.direction = Unknown
	}
	if f := m.cfg.Workloads; f != nil {
		w := f(ci)
		m.fill(&k.src, w.SourceWorkload, w.SourceNamespace, w.SourceApp, w.SourceCanonicalService, w.SourceCanonicalRevision)
		m.fill(&k.dst, w.DestinationWorkload, w.DestinationNamespace, w.DestinationApp, w.DestinationCanonicalService, w.DestinationCanonicalRevision)
		k.dstService = bounded(w.DestinationService)
		k.dstServiceName, k.dstServiceNS = bounded(w.DestinationServiceName), bounded(w.DestinationServiceNamespace)
	}
	return k
}

// peer starts one side's labels from its verified identity.
func (m *Metrics) peer(id spiffeid.ID) peerKey {
	return peerKey{workload: Unknown, ns: m.ns.namespace(id), principal: principal(id), app: Unknown,
		canonSvc: Unknown, canonRev: Unknown, cluster: Unknown}
}

// fill adds what the tables know of one side. A known workload belongs to
// this cluster (Config.ClusterID) and, as in Istio, has a canonical
// service (default its workload name) and revision (default "latest").
func (m *Metrics) fill(p *peerKey, workload, ns, app, canonSvc, canonRev string) {
	p.workload, p.app = bounded(workload), bounded(app)
	if ns != "" {
		p.ns = bounded(ns)
	}
	if p.workload == Unknown {
		return
	}
	p.cluster = m.cfg.ClusterID
	if canonSvc == "" {
		canonSvc = p.workload
	}
	if canonRev == "" {
		canonRev = "latest"
	}
	p.canonSvc, p.canonRev = bounded(canonSvc), bounded(canonRev)
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
		for _, p := range []*peerKey{&k.src, &k.dst} {
			p.principal, p.workload, p.canonSvc, p.canonRev = Other, Other, Other, Other
		}
		if s := m.series[k]; s != nil {
			return s, true
		}
		// The principal-collapsed sets may grow by a reserve of an eighth
		// of the cap; past that every workload label is "other", which
		// leaves only reporter x direction x policy x flags (< 100 sets).
		if len(m.series) >= m.cfg.MaxSeries+m.cfg.MaxSeries/8 {
			for _, p := range []*peerKey{&k.src, &k.dst} {
				p.ns, p.app, p.cluster = Other, Other, Other
			}
			k.dstService, k.dstServiceName, k.dstServiceNS = Other, Other, Other
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
	s = m.newSeries(&k)
	m.series[k] = s
	return s, collapsed
}

// Series reports how many distinct connection label sets exist.
func (m *Metrics) Series() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.series)
}

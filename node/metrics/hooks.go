package metrics

import (
	"fmt"

	"github.com/ambit-mesh/ambit/tunnel"
)

// TunnelHooks returns hooks for a tunnel.Server (reporter
// ReporterDestination) or tunnel.Client (ReporterSource) that count the
// connection and write its access log line. It panics on any other
// reporter: that is a wiring mistake, not input.
//
// OnStart counts ambit_tcp_connections_opened_total. OnEnd counts closed
// or failed (by the outcome, see the package documentation), adds the
// bytes, and logs.
func (m *Metrics) TunnelHooks(reporter string) tunnel.Hooks {
	if reporter != ReporterSource && reporter != ReporterDestination {
		panic(fmt.Sprintf("metrics: reporter must be %q or %q, not %q", ReporterSource, ReporterDestination, reporter))
	}
	return tunnel.Hooks{
		OnStart: func(ci *tunnel.ConnInfo) {
			s, _ := m.lookup(m.key(reporter, ci))
			s.opened.Inc()
		},
		OnEnd: func(ci *tunnel.ConnInfo) {
			k := m.key(reporter, ci)
			s, collapsed := m.lookup(k)
			if collapsed {
				m.overflow.Inc()
			}
			if failedOutcome(ci.Outcome) {
				s.failed.Inc()
			} else {
				s.closed.Inc()
			}
			if ci.BytesSent > 0 {
				s.sent.Add(float64(ci.BytesSent))
			}
			if ci.BytesRecv > 0 {
				s.recv.Add(float64(ci.BytesRecv))
			}
			if m.cfg.AccessLog != nil {
				m.accessLog(&k, ci)
			}
		},
		OnRefuse: m.countRefusal,
	}
}

// countRefusal counts ambit_hbone_refused_total by reason (a small fixed
// set of tunnel.Refuse* values: no identity or address is a label).
func (m *Metrics) countRefusal(ri tunnel.RefuseInfo) {
	m.refused.WithLabelValues(ri.Reason).Inc()
}

// NodeHooks returns one tunnel.Hooks for a node's data path, which reports
// both directions through the same hooks (node/dataplane): inbound
// connections are counted and logged as the destination's reporter,
// outbound ones as the source's.
func (m *Metrics) NodeHooks() tunnel.Hooks {
	src, dst := m.TunnelHooks(ReporterSource), m.TunnelHooks(ReporterDestination)
	pick := func(ci *tunnel.ConnInfo) tunnel.Hooks {
		if ci.Direction == tunnel.Inbound {
			return dst
		}
		return src
	}
	return tunnel.Hooks{
		OnStart:  func(ci *tunnel.ConnInfo) { pick(ci).OnStart(ci) },
		OnEnd:    func(ci *tunnel.ConnInfo) { pick(ci).OnEnd(ci) },
		OnRefuse: m.countRefusal,
	}
}

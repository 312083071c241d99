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
		OnStart:  func(ci *tunnel.ConnInfo) { m.onStart(reporter, ci) },
		OnEnd:    func(ci *tunnel.ConnInfo) { m.onEnd(reporter, ci) },
		OnRefuse: m.countRefusal,
	}
}

// onStart counts an established connection as opened and, when it reports
// ConnInfo.Live, keeps it so that its bytes are counted while it is open.
func (m *Metrics) onStart(reporter string, ci *tunnel.ConnInfo) {
	s, _ := m.lookup(m.key(reporter, ci))
	s.opened.Inc()
	s.iOpened.Inc()
	m.live.add(ci, s)
}

// onEnd counts the end of a connection. A live connection keeps the labels
// it started with (only response_flags change), and its bytes go to the
// series it was opened under, as ztunnel counts them; the bytes not yet
// flushed are added now.
func (m *Metrics) onEnd(reporter string, ci *tunnel.ConnInfo) {
	toDst, fromDst, bs, live := m.live.end(ci)
	var k labelKey
	if live {
		k = bs.key
	} else {
		k = m.key(reporter, ci)
	}
	k.flags = ci.Outcome
	if k.flags == tunnel.OutcomeOK {
		k.flags = NoFlags
	}
	s, collapsed := m.lookup(k)
	if collapsed {
		m.overflow.Inc()
	}
	if failedOutcome(ci.Outcome) {
		// Never established: ambit counts it failed only; ztunnel counts
		// every connection it handled as opened and closed, and a failed
		// one in its failure counter too.
		s.failed.Inc()
		s.iOpened.Inc()
		s.iClosed.Inc()
		s.iFailed.Inc()
	} else {
		s.closed.Inc()
		s.iClosed.Inc()
		if s.istioFailed {
			s.iFailed.Inc()
		}
	}
	if !live {
		bs = s
		if k.flags != NoFlags && (ci.BytesSent > 0 || ci.BytesRecv > 0) {
			nk := k
			nk.flags = NoFlags
			bs, _ = m.lookup(nk)
		}
	}
	bs.addBytes(ci.BytesSent-toDst, ci.BytesRecv-fromDst)
	if m.logged(ci) {
		m.accessLog(&k, ci)
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

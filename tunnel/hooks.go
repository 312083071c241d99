package tunnel

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Direction of a proxied connection as seen by the endpoint reporting it.
type Direction string

// Directions.
const (
	Inbound  Direction = "inbound"  // reported by a Server
	Outbound Direction = "outbound" // reported by a Client
)

// Outcomes recorded in ConnInfo.Outcome, in the spirit of Envoy's response
// flags. The empty string means the connection was carried and ended
// normally.
const (
	OutcomeOK              = ""
	OutcomeDenied          = "DENY"             // authorization refused (401)
	OutcomeConnect         = "CONNECT"          // tunnel could not be opened (client side)
	OutcomeTLSFailure      = "TLS_FAILURE"      // TLS handshake failed
	OutcomeIdentityError   = "IDENTITY_ERROR"   // peer identity unexpected / no certificate
	OutcomeBadRequest      = "BAD_REQUEST"      // malformed CONNECT (400)
	OutcomeUpstreamRefused = "UPSTREAM_REFUSED" // destination refused or unreachable (503)
	OutcomeReset           = "RESET"            // a side reset the connection mid-stream
	OutcomeShutdown        = "SHUTDOWN"         // closed by Server.Shutdown at its deadline
	OutcomeRevoked         = "REVOKED"          // established, then closed when its authorization was withdrawn (policy change)
)

// ConnInfo describes one proxied connection (one CONNECT stream). Hooks
// receive a pointer they may read during the call but must not keep or
// modify after it returns.
type ConnInfo struct {
	Direction   Direction
	Source      spiffeid.ID    // client identity (verified on the server)
	Destination spiffeid.ID    // server identity (verified on the client; own on the server)
	SourceAddr  netip.AddrPort // server: TCP peer of the tunnel; client: DialRequest.SourceAddr
	DestAddr    netip.AddrPort // CONNECT authority
	TunnelAddr  netip.AddrPort // address of the HBONE listener
	// Untrusted request headers as received (server) or sent (client),
	// bounded. Never identity.
	Forwarded   Forwarded
	Baggage     Baggage
	TraceParent TraceParent
	Policy      string // the authorization decision's policy (server)
	Reason      string // why it was denied or failed, human readable

	Start     time.Time
	Duration  time.Duration
	BytesSent int64 // bytes towards the destination (client -> server app)
	BytesRecv int64 // bytes from the destination
	// Live, when set, reports the bytes carried so far (towards the
	// destination, from it) while the connection is open. It is set
	// before OnStart and, unlike the ConnInfo itself, may be kept and
	// called from any goroutine until OnEnd returns, so metrics and the
	// connection table can count bytes of long-lived connections. It
	// reads counters the data path keeps anyway (no cost per write).
	Live    func() (sent, recv int64)
	Outcome string
	Err     error
}

// Hooks observe proxied connections for metrics and the access log. Both
// are optional. OnStart runs when a stream is established (before bytes
// move), OnEnd exactly once when it ends, including failures before it was
// established (OnStart is then not called). Hooks run on the connection's
// goroutine: keep them short.
type Hooks struct {
	OnStart func(*ConnInfo)
	OnEnd   func(*ConnInfo)
	// OnRefuse reports a hostile-peer defence that bit: a connection closed
	// for a flood, a handshake over the cap, a stream over its identity's
	// cap, a loop, a malformed request. Reason is one of the Refuse*
	// constants (a small set: fit for a metrics label).
	OnRefuse func(RefuseInfo)
}

// RefuseInfo describes one refusal by a hostile-peer defence.
type RefuseInfo struct {
	Reason   string         // a Refuse* constant
	Peer     spiffeid.ID    // verified peer identity (zero before the handshake)
	PeerAddr netip.AddrPort // TCP peer
}

func (h Hooks) refuse(ri RefuseInfo) {
	if h.OnRefuse != nil {
		h.OnRefuse(ri)
	}
}

func (h Hooks) start(ci *ConnInfo) {
	if h.OnStart != nil {
		h.OnStart(ci)
	}
}

func (h Hooks) end(ci *ConnInfo) {
	if h.OnEnd != nil {
		h.OnEnd(ci)
	}
}

// Stats is a snapshot of an endpoint's counters since it was created.
type Stats struct {
	TunnelsAccepted  int64 // server: TCP connections accepted on HBONE listeners
	TunnelsDialed    int64 // client: HTTP/2 connections established
	TunnelDialErrors int64 // client: dials or handshakes that failed
	TLSFailures      int64 // handshakes failed (garbage, bad certificate, timeout)
	IdentityErrors   int64 // client: server identity not expected / no own certificate
	ProtocolErrors   int64 // HTTP/2 violations by the peer (connection or stream)
	Streams          int64 // CONNECT streams established (200)
	StreamsActive    int64 // streams currently established
	BadRequests      int64 // 400
	Denied           int64 // 401
	UpstreamFailures int64 // 503
	Resets           int64 // streams ended by a reset
	Revoked          int64 // server: streams ended because their authorization was withdrawn (Decision.Watch)
	KeepaliveDeaths  int64 // connections closed for keepalive timeout
	WriteTimeouts    int64 // connections closed because the peer stopped reading
	BytesSent        int64 // payload bytes towards destinations
	BytesRecv        int64 // payload bytes from destinations
	EarlyResets      int64 // server: streams the peer reset before their answer (handler cancelled)
	CalmCloses       int64 // connections closed with GOAWAY(ENHANCE_YOUR_CALM) for a flood
	Malformed        int64 // server: malformed requests (RFC 9113 section 8.1.1), reset with PROTOCOL_ERROR
	Loops            int64 // server: CONNECTs to one of the daemon's own ports (400)
	HandshakeRefused int64 // server: connections closed at once, over the handshake cap
	IdentityRefused  int64 // server: streams refused (503), over the source identity's stream cap
	AlgorithmRefused int64 // server: handshakes refused, the client offers no algorithm the TLS profile allows (also in TLSFailures)
}

type counters struct {
	tunnelsAccepted, tunnelsDialed, tunnelDialErrors, tlsFailures, identityErrors,
	protocolErrors, streams, streamsActive, badRequests, denied, upstreamFailures,
	resets, revoked, keepaliveDeaths, writeTimeouts, bytesSent, bytesRecv atomic.Int64
	earlyResets, calmCloses, malformed, loops, handshakeRefused, identityRefused, algorithmRefused atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		TunnelsAccepted:  c.tunnelsAccepted.Load(),
		TunnelsDialed:    c.tunnelsDialed.Load(),
		TunnelDialErrors: c.tunnelDialErrors.Load(),
		TLSFailures:      c.tlsFailures.Load(),
		IdentityErrors:   c.identityErrors.Load(),
		ProtocolErrors:   c.protocolErrors.Load(),
		Streams:          c.streams.Load(),
		StreamsActive:    c.streamsActive.Load(),
		BadRequests:      c.badRequests.Load(),
		Denied:           c.denied.Load(),
		UpstreamFailures: c.upstreamFailures.Load(),
		Resets:           c.resets.Load(),
		Revoked:          c.revoked.Load(),
		KeepaliveDeaths:  c.keepaliveDeaths.Load(),
		WriteTimeouts:    c.writeTimeouts.Load(),
		BytesSent:        c.bytesSent.Load(),
		BytesRecv:        c.bytesRecv.Load(),
		EarlyResets:      c.earlyResets.Load(),
		CalmCloses:       c.calmCloses.Load(),
		Malformed:        c.malformed.Load(),
		Loops:            c.loops.Load(),
		HandshakeRefused: c.handshakeRefused.Load(),
		IdentityRefused:  c.identityRefused.Load(),
		AlgorithmRefused: c.algorithmRefused.Load(),
	}
}

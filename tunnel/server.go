package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/ambit-mesh/ambit/identity"
)

// Workload is what one HBONE listener serves: the destination pod.
type Workload struct {
	ID    spiffeid.ID  // required: the identity the server presents
	Addrs []netip.Addr // required: pod IPs; a CONNECT authority must be one of these
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// SVIDs gives the destination workload's certificate; it is asked on
	// every handshake, so rotation needs no restart. Required.
	SVIDs identity.SVIDSource
	// Bundles are the trust bundles: a client is accepted when its SPIFFE
	// ID's trust domain has a bundle here. Required.
	Bundles x509bundle.Source
	// Authorizer decides each CONNECT before anything is dialed. Required.
	Authorizer Authorizer
	// Dial reaches the destination application. Optional: default a
	// net.Dialer.
	Dial func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// Logger is optional (default: discard).
	Logger *slog.Logger
	// Hooks are optional.
	Hooks Hooks
	// Settings are optional.
	Settings Settings
	// Guard caps handshakes in progress and streams per source identity
	// across every Server that shares it. Optional: default a Guard of
	// this Server's own with the default caps.
	Guard *Guard
	// ReservedPorts are the ports of the daemon's own listeners (HBONE,
	// capture, admin, metrics): a CONNECT to one of them is a loop and is
	// refused with 400. The port of the listener a CONNECT arrives on is
	// always reserved. Optional.
	ReservedPorts []uint16
}

// Server terminates HBONE: one Server, any number of listeners (one per
// pod network namespace), each serving one Workload.
type Server struct {
	cfg ServerConfig
	set Settings
	log *slog.Logger
	ctr counters

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	shutdown  bool
	wg        sync.WaitGroup // connection and stream goroutines
}

// NewServer validates cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	switch {
	case cfg.SVIDs == nil:
		return nil, fmt.Errorf("%w: ServerConfig.SVIDs is required", ErrConfig)
	case cfg.Bundles == nil:
		return nil, fmt.Errorf("%w: ServerConfig.Bundles is required", ErrConfig)
	case cfg.Authorizer == nil:
		return nil, fmt.Errorf("%w: ServerConfig.Authorizer is required", ErrConfig)
	case cfg.Settings.FIPS && cfg.Settings.AllowTLS12:
		return nil, fmt.Errorf("%w: Settings.FIPS excludes AllowTLS12 (FIPS mode is TLS 1.3 only)", ErrConfig)
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", dst.String())
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Guard == nil {
		cfg.Guard = NewGuard(GuardConfig{})
	}
	return &Server{
		cfg:       cfg,
		set:       cfg.Settings.withDefaults(),
		log:       log,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}, nil
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats { return s.ctr.snapshot() }

// Serve accepts HBONE connections on ln for workload w until ctx is done
// (then the listener and its connections are closed) or Shutdown is
// called. It returns ErrClosed after Shutdown, ctx.Err() after
// cancellation, or the listener's error.
func (s *Server) Serve(ctx context.Context, ln net.Listener, w Workload) error {
	if w.ID.IsZero() || len(w.Addrs) == 0 {
		return fmt.Errorf("%w: Workload needs an ID and at least one address", ErrConfig)
	}
	conf := serverTLS(s.cfg.SVIDs, s.cfg.Bundles, w.ID, s.set)
	reserved := map[uint16]bool{}
	for _, p := range s.cfg.ReservedPorts {
		reserved[p] = true
	}
	if p := addrPortOf(ln.Addr()).Port(); p != 0 {
		reserved[p] = true
	}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			down := s.shutdown
			s.mu.Unlock()
			switch {
			case down:
				return ErrClosed
			case ctx.Err() != nil:
				return ctx.Err()
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Anything else (EMFILE, ENFILE, ECONNABORTED...) is transient
			// for a listener: back off and keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("hbone: accept failed, retrying", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
			continue
		}
		backoff = 0
		s.ctr.tunnelsAccepted.Add(1)
		if !s.cfg.Guard.startHandshake() {
			s.refused(&s.ctr.handshakeRefused, RefuseHandshakes, spiffeid.ID{}, addrPortOf(nc.RemoteAddr()),
				"hbone: TLS handshakes in progress at the cap, connection closed", "workload", w.ID.String())
			_ = nc.Close()
			continue
		}
		s.wg.Add(1)
		go s.serveConn(ctx, nc, w, conf, reserved)
	}
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn, w Workload, conf *tls.Config, reserved map[uint16]bool) {
	defer s.wg.Done()
	rb := &recordBatcher{Conn: nc}
	tc := tls.Server(rb, conf)
	hctx, cancel := context.WithTimeout(ctx, s.set.ConnectTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	s.cfg.Guard.endHandshake()
	src := addrPortOf(nc.RemoteAddr())
	if err != nil {
		s.ctr.tlsFailures.Add(1)
		if algorithmRefusal(err) {
			s.refused(&s.ctr.algorithmRefused, RefuseTLSAlgorithms, spiffeid.ID{}, src,
				"hbone: TLS handshake refused: the client offers no algorithm this endpoint's TLS profile allows",
				"workload", w.ID.String(), "fips", s.set.FIPS, "err", err.Error())
		} else {
			s.log.Warn("hbone: TLS handshake failed", "peer", src, "workload", w.ID.String(), "err", err)
		}
		_ = nc.Close()
		s.cfg.Hooks.end(&ConnInfo{Direction: Inbound, Destination: w.ID, SourceAddr: src, TunnelAddr: addrPortOf(nc.LocalAddr()),
			Start: time.Now(), Outcome: OutcomeTLSFailure, Reason: "TLS handshake failed", Err: fmt.Errorf("%w: %w", ErrTLS, err)})
		return
	}
	peer, err := peerID(tc.ConnectionState())
	if err != nil { // cannot happen after verification; refuse anyway
		s.ctr.tlsFailures.Add(1)
		s.log.Warn("hbone: client without SPIFFE ID", "peer", src, "err", err)
		_ = nc.Close()
		return
	}
	c := newConn(tc, s.set, s.log, &s.ctr, false)
	c.batch = rb
	c.peer, c.local = peer, w.ID
	c.onRequest = func(hctx context.Context, st *Stream, f *http2.MetaHeadersFrame) {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.handlerDone(st.id)
			s.handle(ctx, hctx, c, st, f, w, reserved)
		}()
	}
	c.onMalformed = func(id uint32, why error) {
		s.ctr.badRequests.Add(1)
		s.refused(&s.ctr.malformed, RefuseMalformed, peer, src, "hbone: malformed request, answered 400 and reset with PROTOCOL_ERROR",
			"stream", id, "why", why.Error(), "workload", w.ID.String())
	}
	c.onRefuse = func(reason string) {
		s.cfg.Hooks.refuse(RefuseInfo{Reason: reason, Peer: peer, PeerAddr: src})
	}
	_ = tc.SetReadDeadline(time.Now().Add(s.set.ConnectTimeout))
	if err := c.start(); err != nil {
		s.ctr.protocolErrors.Add(1)
		s.log.Warn("hbone: HTTP/2 preface failed", "peer", src, "identity", peer.String(), "err", err)
		_ = nc.Close()
		return
	}
	_ = tc.SetReadDeadline(time.Time{})
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		c.goAway()
		_ = nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.onClose = func(c *conn) {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}
	stop := context.AfterFunc(ctx, func() { c.abort(fmt.Errorf("%w: serve context done", ErrClosed)) })
	defer stop()
	c.run()
}

// handle answers one CONNECT: validate, authorize, dial, splice. ctx is
// the Serve context; hctx, the handler's, also ends when the peer resets
// the stream before the answer or the connection ends: it bounds the
// authorization and the dial.
func (s *Server) handle(ctx, hctx context.Context, c *conn, st *Stream, f *http2.MetaHeadersFrame, w Workload, reserved map[uint16]bool) {
	ci := &ConnInfo{
		Direction:   Inbound,
		Source:      c.peer,
		Destination: w.ID,
		SourceAddr:  addrPortOf(c.nc.RemoteAddr()),
		TunnelAddr:  addrPortOf(c.nc.LocalAddr()),
		Start:       time.Now(),
	}
	reject := func(status int, outcome, reason string, err error) {
		ci.Outcome, ci.Reason, ci.Err, ci.Duration = outcome, reason, err, time.Since(ci.Start)
		s.log.Warn("hbone: CONNECT rejected", "status", status, "reason", reason, "source", ci.Source.String(),
			"source_addr", ci.SourceAddr, "destination", ci.DestAddr, "workload", w.ID.String())
		_ = c.respond(st, status, true)
		_ = st.Close()
		s.cfg.Hooks.end(ci)
	}
	// earlyEnd ends a stream the peer reset before its answer (or whose
	// connection ended): nothing is answered.
	earlyEnd := func() {
		ci.Outcome, ci.Reason, ci.Duration = OutcomeReset, "peer reset the stream before its answer", time.Since(ci.Start)
		ci.Err = context.Cause(hctx)
		_ = st.Close()
		s.cfg.Hooks.end(ci)
	}
	dst, err := s.checkRequest(f, w)
	if err != nil {
		s.ctr.badRequests.Add(1)
		reject(400, OutcomeBadRequest, err.Error(), err)
		return
	}
	ci.DestAddr = dst
	if reserved[dst.Port()] {
		s.ctr.badRequests.Add(1)
		s.refused(&s.ctr.loops, RefuseLoop, c.peer, ci.SourceAddr, "hbone: CONNECT to one of the daemon's own ports refused (loop)",
			"destination", dst, "workload", w.ID.String())
		reject(400, OutcomeBadRequest, "destination port is one of the daemon's own listeners (loop)",
			fmt.Errorf("%w: %s is a daemon listener", ErrBadRequest, dst))
		return
	}
	if !s.cfg.Guard.acquire(c.peer) {
		s.ctr.upstreamFailures.Add(1)
		s.refused(&s.ctr.identityRefused, RefuseIdentityStream, c.peer, ci.SourceAddr,
			"hbone: source identity at its stream cap on this node, CONNECT refused", "workload", w.ID.String())
		reject(503, OutcomeUpstreamRefused, "source identity at its stream cap on this node",
			fmt.Errorf("%w: source identity at its stream cap", ErrUpstream))
		return
	}
	defer s.cfg.Guard.release(c.peer)
	for _, h := range f.RegularFields() {
		switch h.Name {
		case "forwarded":
			if !ci.Forwarded.For.IsValid() {
				ci.Forwarded = ParseForwarded(h.Value)
			}
		case "baggage":
			if ci.Baggage == nil {
				ci.Baggage = ParseBaggage(h.Value)
			}
		case "traceparent":
			if ci.TraceParent.IsZero() {
				ci.TraceParent, _ = ParseTraceParent(h.Value)
			}
		}
	}
	dec := s.cfg.Authorizer.Authorize(hctx, AuthzRequest{Source: c.peer, SourceAddr: ci.SourceAddr, Destination: dst, Workload: w.ID})
	ci.Policy = dec.Policy
	if hctx.Err() != nil { // not watched: it never reaches the destination
		earlyEnd()
		return
	}
	if !dec.Allow {
		s.ctr.denied.Add(1)
		reason := dec.Reason // the authorizer's words; the outcome already says DENY
		if reason == "" {
			reason = "denied by authorization"
		}
		reject(401, OutcomeDenied, reason, fmt.Errorf("%w: %s", ErrDenied, reason))
		return
	}
	// From here the authorizer may withdraw the decision (Decision.Watch):
	// the stream runs under sctx, which a revoke cancels.
	rv := watch(ctx, dec)
	defer rv.end()
	sctx := rv.context(ctx)
	var up net.Conn
	if rv.revokedBy() == nil { // Watch itself may have revoked
		dctx, cancel := context.WithTimeout(sctx, s.set.ConnectTimeout)
		stop := context.AfterFunc(hctx, cancel) // an early reset abandons the dial
		up, err = s.cfg.Dial(dctx, dst)
		stop()
		cancel()
	}
	if hctx.Err() != nil {
		if err == nil && up != nil {
			_ = up.Close()
		}
		earlyEnd()
		return
	}
	if d := rv.revokedBy(); d != nil { // revoked before established: refuse as denied
		if err == nil && up != nil {
			_ = up.Close()
		}
		s.ctr.denied.Add(1)
		ci.Policy = d.Policy
		reason := revokedReason(d)
		reject(401, OutcomeDenied, reason, fmt.Errorf("%w: %w: %s", ErrDenied, ErrRevoked, reason))
		return
	}
	if err != nil {
		s.ctr.upstreamFailures.Add(1)
		reject(503, OutcomeUpstreamRefused, "dial "+dst.String()+": "+err.Error(), fmt.Errorf("%w: %w", ErrUpstream, err))
		return
	}
	if err := c.respond(st, 200, false); err != nil {
		_ = up.Close()
		_ = st.Close()
		ci.Outcome, ci.Err, ci.Duration = OutcomeReset, err, time.Since(ci.Start)
		s.cfg.Hooks.end(ci)
		return
	}
	s.ctr.streams.Add(1)
	s.ctr.streamsActive.Add(1)
	ci.Live = func() (int64, int64) { return st.nread.Load(), st.nwritten.Load() }
	s.cfg.Hooks.start(ci)
	sent, recv, err := Splice(sctx, st, up, s.set)
	s.ctr.streamsActive.Add(-1)
	s.ctr.bytesSent.Add(sent)
	s.ctr.bytesRecv.Add(recv)
	ci.BytesSent, ci.BytesRecv, ci.Duration, ci.Err = sent, recv, time.Since(ci.Start), err
	switch d := rv.revokedBy(); {
	case err != nil && d != nil:
		s.ctr.revoked.Add(1)
		ci.Outcome, ci.Policy, ci.Reason = OutcomeRevoked, d.Policy, revokedReason(d)
		ci.Err = fmt.Errorf("%w: %s", ErrRevoked, ci.Reason)
		s.log.Info("hbone: stream closed, authorization revoked", "reason", ci.Reason, "policy", d.Policy,
			"source", ci.Source.String(), "source_addr", ci.SourceAddr, "destination", ci.DestAddr, "workload", w.ID.String())
	case err != nil:
		s.ctr.resets.Add(1)
		ci.Outcome = OutcomeReset
		if errors.Is(err, ErrClosed) {
			ci.Outcome = OutcomeShutdown
		}
	}
	s.cfg.Hooks.end(ci)
}

// checkRequest validates a CONNECT request: method, pseudo-headers, and an
// authority that is one of the workload's addresses.
func (s *Server) checkRequest(f *http2.MetaHeadersFrame, w Workload) (netip.AddrPort, error) {
	if f.Truncated {
		return netip.AddrPort{}, fmt.Errorf("%w: header list too large", ErrBadRequest)
	}
	var method, authority string
	for _, h := range f.PseudoFields() {
		switch h.Name {
		case ":method":
			method = h.Value
		case ":authority":
			authority = h.Value
		case ":path", ":scheme", ":protocol":
			return netip.AddrPort{}, fmt.Errorf("%w: CONNECT must not carry %s", ErrBadRequest, h.Name)
		default:
			return netip.AddrPort{}, fmt.Errorf("%w: pseudo-header %s in a request", ErrBadRequest, h.Name)
		}
	}
	if method != "CONNECT" {
		return netip.AddrPort{}, fmt.Errorf("%w: method %q, only CONNECT is served", ErrBadRequest, truncate(method, 32))
	}
	dst, err := ParseAuthority(authority)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, a := range w.Addrs {
		if a == dst.Addr() {
			return dst, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("%w: authority %s is not served by %s", ErrBadRequest, dst, w.ID)
}

// Shutdown stops accepting and asks every connection to drain (GOAWAY):
// live streams continue until ctx is done, then every connection is
// closed. It returns ctx.Err() when streams had to be cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for ln := range s.listeners {
		_ = ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway()
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var err error
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-t.C:
			continue
		case <-ctx.Done():
			err = ctx.Err()
		}
		s.mu.Lock()
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			c.abort(fmt.Errorf("%w: shutdown deadline", ErrClosed))
		}
		break
	}
	s.wg.Wait()
	return err
}

// refused counts, logs and reports one refusal by a hostile-peer defence.
// Under a flood the log line is written for the 1st, 2nd, 4th, 8th...
// refusal of a kind and then every 1024th, so the log cannot be flooded.
func (s *Server) refused(ctr *atomic.Int64, reason string, peer spiffeid.ID, addr netip.AddrPort, msg string, args ...any) {
	n := ctr.Add(1)
	if n&(n-1) == 0 || n%1024 == 0 {
		s.log.Warn(msg, append([]any{"reason", reason, "peer", peer.String(), "peer_addr", addr, "refused_so_far", n}, args...)...)
	}
	s.cfg.Hooks.refuse(RefuseInfo{Reason: reason, Peer: peer, PeerAddr: addr})
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

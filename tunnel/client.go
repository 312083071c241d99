package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2/hpack"

	"github.com/ambit-mesh/ambit/identity"
)

// HBONEPort is the port of the inbound HBONE listener in every captured pod.
const HBONEPort = 15008

// ClientConfig configures a Client.
type ClientConfig struct {
	// SVIDs gives the source workloads' certificates, asked on every
	// handshake. Required.
	SVIDs identity.SVIDSource
	// Bundles verify servers. Required.
	Bundles x509bundle.Source
	// Dial opens the TCP connection of a tunnel; src is the source pod's IP
	// (invalid: any). Optional: default a net.Dialer that ignores src.
	Dial func(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error)
	// IdleTimeout closes a pooled connection that carried no stream for
	// this long. Optional: default 5 minutes.
	IdleTimeout time.Duration
	// Logger is optional (default: discard).
	Logger *slog.Logger
	// Hooks are optional.
	Hooks Hooks
	// Settings are optional.
	Settings Settings
}

// Client opens CONNECT streams through pooled HBONE connections.
type Client struct {
	cfg  ClientConfig
	set  Settings
	log  *slog.Logger
	ctr  counters
	pool *pool
}

// DialRequest says what to tunnel where.
type DialRequest struct {
	Source      spiffeid.ID    // required: the source workload, whose certificate the client presents
	SourceAddr  netip.AddrPort // optional: original client address (forwarded header; its IP is part of the pool key)
	Destination netip.AddrPort // required: pod IP:target port, the CONNECT authority
	Tunnel      netip.AddrPort // optional: the HBONE listener; default Destination.Addr():15008
	Expected    []spiffeid.ID  // required: identities the server may present
	Baggage     string         // optional: baggage header value
	// Host is optional: the Service hostname the client dialled (e.g.
	// "backend.pay.svc.cluster.local"), sent as the forwarded header's
	// host parameter, as ztunnel does, so the server can name the
	// Service; reported in ConnInfo.Forwarded.Host.
	Host string
}

// NewClient validates cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	switch {
	case cfg.SVIDs == nil:
		return nil, fmt.Errorf("%w: ClientConfig.SVIDs is required", ErrConfig)
	case cfg.Bundles == nil:
		return nil, fmt.Errorf("%w: ClientConfig.Bundles is required", ErrConfig)
	case cfg.Settings.FIPS && cfg.Settings.AllowTLS12:
		return nil, fmt.Errorf("%w: Settings.FIPS excludes AllowTLS12 (FIPS mode is TLS 1.3 only)", ErrConfig)
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", dst.String())
		}
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, set: cfg.Settings.withDefaults(), log: log}
	c.pool = newPool(c)
	return c, nil
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats { return c.ctr.snapshot() }

// Conns reports how many HBONE connections the pool holds.
func (c *Client) Conns() int { return c.pool.size() }

// Close closes every pooled connection (and so every stream) and makes
// further Dials fail with ErrClosed.
func (c *Client) Close() error {
	c.pool.close()
	return nil
}

// Dial opens a CONNECT stream to r.Destination through a pooled tunnel to
// r.Tunnel, presenting r.Source's certificate and accepting only a server
// in r.Expected. The returned net.Conn is a *Stream (CloseWrite sends
// END_STREAM). Errors wrap ErrDenied (401), ErrBadRequest (400),
// ErrUpstream (503), ErrIdentityMismatch, ErrTLS, ErrConnClosed or the
// context's error.
func (c *Client) Dial(ctx context.Context, r DialRequest) (net.Conn, error) {
	if r.Source.IsZero() || !r.Destination.IsValid() || len(r.Expected) == 0 {
		return nil, fmt.Errorf("%w: DialRequest needs Source, Destination and Expected", ErrConfig)
	}
	if !r.Tunnel.IsValid() {
		r.Tunnel = netip.AddrPortFrom(r.Destination.Addr(), HBONEPort)
	}
	ci := &ConnInfo{
		Direction:   Outbound,
		Source:      r.Source,
		SourceAddr:  r.SourceAddr,
		DestAddr:    r.Destination,
		TunnelAddr:  r.Tunnel,
		TraceParent: NewTraceParent(),
		Start:       time.Now(),
	}
	if r.SourceAddr.IsValid() || r.Host != "" {
		ci.Forwarded = Forwarded{For: r.SourceAddr, Host: r.Host}
	}
	hdrs := []hpack.HeaderField{{Name: "traceparent", Value: ci.TraceParent.String()}}
	if v := ci.Forwarded.String(); v != "" {
		hdrs = append(hdrs, hpack.HeaderField{Name: "forwarded", Value: v})
	}
	if r.Baggage != "" {
		ci.Baggage = ParseBaggage(r.Baggage)
		hdrs = append(hdrs, hpack.HeaderField{Name: "baggage", Value: r.Baggage})
	}
	fail := func(outcome string, err error) (net.Conn, error) {
		ci.Outcome, ci.Err, ci.Reason, ci.Duration = outcome, err, err.Error(), time.Since(ci.Start)
		c.log.Debug("hbone: dial failed", "source", r.Source.String(), "destination", r.Destination, "tunnel", r.Tunnel, "outcome", outcome, "err", err)
		c.cfg.Hooks.end(ci)
		return nil, err
	}
	key := newPoolKey(r)
	var st *Stream
	for attempt := 0; ; attempt++ {
		hc, err := c.pool.get(ctx, key, r)
		if err != nil {
			return fail(dialOutcome(err), err)
		}
		s, resp, err := hc.openStream(ctx, FormatAuthority(r.Destination), hdrs)
		if err != nil {
			if errors.Is(err, ErrRefused) && attempt < 2 && ctx.Err() == nil {
				continue // that connection was going away: use another
			}
			return fail(OutcomeConnect, err)
		}
		ci.Destination = hc.peer
		status, _ := strconv.Atoi(resp.PseudoValue("status"))
		if status != 200 {
			_ = s.Close()
			switch status {
			case 401:
				c.ctr.denied.Add(1)
				return fail(OutcomeDenied, fmt.Errorf("%w (401 from %s)", ErrDenied, hc.peer))
			case 400:
				c.ctr.badRequests.Add(1)
				return fail(OutcomeBadRequest, fmt.Errorf("%w (400 from %s)", ErrBadRequest, hc.peer))
			case 503:
				c.ctr.upstreamFailures.Add(1)
				return fail(OutcomeUpstreamRefused, fmt.Errorf("%w (503 from %s)", ErrUpstream, hc.peer))
			}
			return fail(OutcomeConnect, fmt.Errorf("%w: %q", ErrUnexpectedStatus, truncate(resp.PseudoValue("status"), 8)))
		}
		st = s
		break
	}
	st.remote = net.TCPAddrFromAddrPort(r.Destination)
	c.ctr.streams.Add(1)
	c.ctr.streamsActive.Add(1)
	ci.Live = func() (int64, int64) { return st.nwritten.Load(), st.nread.Load() }
	c.cfg.Hooks.start(ci)
	st.onClose = func(s *Stream) {
		c.ctr.streamsActive.Add(-1)
		ci.BytesSent, ci.BytesRecv, ci.Duration = s.nwritten.Load(), s.nread.Load(), time.Since(ci.Start)
		c.ctr.bytesSent.Add(ci.BytesSent)
		c.ctr.bytesRecv.Add(ci.BytesRecv)
		s.c.mu.Lock()
		err := s.resetErr
		if err == nil {
			err = s.endErr // a NO_ERROR reset before END_STREAM
		}
		if err != nil && !errors.Is(err, errLocalClose) {
			ci.Outcome, ci.Err = OutcomeReset, err
		}
		s.c.mu.Unlock()
		c.cfg.Hooks.end(ci)
	}
	return st, nil
}

func dialOutcome(err error) string {
	switch {
	case errors.Is(err, ErrIdentityMismatch), errors.Is(err, identity.ErrNoCertificate):
		return OutcomeIdentityError
	case errors.Is(err, ErrTLS):
		return OutcomeTLSFailure
	}
	return OutcomeConnect
}

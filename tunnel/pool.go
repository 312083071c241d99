package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
)

// poolKey identifies interchangeable HBONE connections (hbone.md,
// Pooling): same source identity, same expected identities, same tunnel
// address, same source IP.
type poolKey struct {
	source   spiffeid.ID
	expected string // sorted, joined
	tunnel   netip.AddrPort
	srcIP    netip.Addr
}

func newPoolKey(r DialRequest) poolKey {
	ids := make([]string, len(r.Expected))
	for i, id := range r.Expected {
		ids[i] = id.String()
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return poolKey{source: r.Source, expected: strings.Join(ids, " "), tunnel: r.Tunnel, srcIP: r.SourceAddr.Addr()}
}

// dialCall is one dial in flight; concurrent callers for the same key wait
// for it instead of dialing themselves.
type dialCall struct {
	done chan struct{}
	err  error
}

type pool struct {
	cl *Client

	mu      sync.Mutex
	conns   map[poolKey][]*conn
	dialing map[poolKey]*dialCall
	closed  bool
	wg      sync.WaitGroup // read loops
}

func newPool(cl *Client) *pool {
	return &pool{cl: cl, conns: map[poolKey][]*conn{}, dialing: map[poolKey]*dialCall{}}
}

func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, cs := range p.conns {
		n += len(cs)
	}
	return n
}

// get returns a connection for key with one stream slot reserved, dialing
// one (once, for all concurrent callers) when none has room.
func (p *pool) get(ctx context.Context, key poolKey, r DialRequest) (*conn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		for _, c := range p.conns[key] {
			if c.tryReserve() {
				p.mu.Unlock()
				return c, nil
			}
		}
		if dc := p.dialing[key]; dc != nil {
			p.mu.Unlock()
			select {
			case <-dc.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if dc.err != nil && !errors.Is(dc.err, context.Canceled) && !errors.Is(dc.err, context.DeadlineExceeded) {
				return nil, dc.err
			}
			continue // a connection is there now (or the dialer gave up on its own context): try again
		}
		dc := &dialCall{done: make(chan struct{})}
		p.dialing[key] = dc
		p.mu.Unlock()

		c, err := p.dial(ctx, key, r)
		p.mu.Lock()
		delete(p.dialing, key)
		if err == nil {
			if p.closed {
				err = ErrClosed
			} else {
				p.conns[key] = append(p.conns[key], c)
			}
		}
		p.mu.Unlock()
		dc.err = err
		close(dc.done)
		if err != nil {
			if c != nil {
				c.abort(err)
			}
			return nil, err
		}
	}
}

// dial opens, authenticates and starts one HBONE connection.
func (p *pool) dial(ctx context.Context, key poolKey, r DialRequest) (*conn, error) {
	cl := p.cl
	set := cl.set
	ctx, cancel := context.WithTimeout(ctx, set.ConnectTimeout)
	defer cancel()
	fail := func(err error) (*conn, error) {
		cl.ctr.tunnelDialErrors.Add(1)
		cl.log.Warn("hbone: tunnel dial failed", "source", key.source.String(), "tunnel", key.tunnel, "expected", key.expected, "err", err)
		return nil, err
	}
	nc, err := cl.cfg.Dial(ctx, key.srcIP, key.tunnel)
	if err != nil {
		return fail(fmt.Errorf("dial %s: %w", key.tunnel, err))
	}
	rb := &recordBatcher{Conn: nc}
	tc := tls.Client(rb, clientTLS(cl.cfg.SVIDs, cl.cfg.Bundles, key.source, r.Expected, set))
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		switch {
		case errors.Is(err, ErrIdentityMismatch), errors.Is(err, identity.ErrNoCertificate):
			cl.ctr.identityErrors.Add(1)
			return fail(fmt.Errorf("%w: %w", ErrTLS, err))
		}
		cl.ctr.tlsFailures.Add(1)
		return fail(fmt.Errorf("%w: %w", ErrTLS, err))
	}
	peer, err := peerID(tc.ConnectionState())
	if err != nil {
		_ = nc.Close()
		cl.ctr.tlsFailures.Add(1)
		return fail(err)
	}
	c := newConn(tc, set, cl.log, &cl.ctr, true)
	c.batch = rb
	c.peer, c.local = peer, key.source
	c.idleTimeout = cl.cfg.IdleTimeout
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetReadDeadline(dl)
	}
	if err := c.start(); err != nil {
		_ = nc.Close()
		// With TLS 1.3 the server verifies our certificate after our side of
		// the handshake finished: a rejection shows up as a failed write.
		cl.ctr.tlsFailures.Add(1)
		return fail(fmt.Errorf("%w: connection failed right after the handshake (certificate refused?): %w", ErrTLS, err))
	}
	c.onClose = func(c *conn) { p.remove(key, c) }
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		c.run()
	}()
	select {
	case <-c.gotSettings:
	case <-c.done:
		// With TLS 1.3 the server verifies our certificate after our side
		// of the handshake finished: its rejection arrives here.
		cl.ctr.tlsFailures.Add(1)
		return fail(fmt.Errorf("%w: server closed the connection before SETTINGS: %w", ErrTLS, c.err()))
	case <-ctx.Done():
		c.abort(ctx.Err())
		return fail(fmt.Errorf("waiting for SETTINGS from %s: %w", key.tunnel, ctx.Err()))
	}
	_ = tc.SetReadDeadline(time.Time{})
	cl.ctr.tunnelsDialed.Add(1)
	c.mu.Lock()
	c.armIdleLocked()
	c.mu.Unlock()
	return c, nil
}

func (p *pool) remove(key poolKey, c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.conns[key]
	if i := slices.Index(cs, c); i >= 0 {
		cs = slices.Delete(cs, i, i+1)
	}
	if len(cs) == 0 {
		delete(p.conns, key)
	} else {
		p.conns[key] = cs
	}
}

func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	var all []*conn
	for _, cs := range p.conns {
		all = append(all, cs...)
	}
	p.mu.Unlock()
	for _, c := range all {
		c.abort(fmt.Errorf("%w: client closed", ErrClosed))
	}
	p.wg.Wait()
}

package dataplane

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/tunnel"
)

// authorizeHBONE adapts the policy engine to the tunnel server: the source
// principal is the one verified in the TLS handshake (Secure), the source IP
// the tunnel's TCP peer, the destination the CONNECT authority (pod IP and
// target port, already checked against the pod's addresses by the server).
// With Config.Live an allowed stream is watched: the server registers it
// with the request decided here, and a Recheck that denies it revokes the
// stream (reset both ways, reported as tunnel.OutcomeRevoked).
func (p *Pod) authorizeHBONE(_ context.Context, r tunnel.AuthzRequest) tunnel.Decision {
	req := authz.Request{
		Workload:    p.cfg.Workload,
		Source:      authz.Source{Principal: r.Source, IP: r.SourceAddr.Addr().Unmap()},
		Destination: authz.Destination{IP: r.Destination.Addr(), Port: r.Destination.Port()},
		Secure:      !r.Source.IsZero(),
	}
	gen := p.generation()
	d := p.cfg.Authorizer.Decide(req)
	dec := tunnel.Decision{Allow: d.Allow, Reason: d.Reason, Policy: d.Policy}
	if d.Allow && p.cfg.Live != nil {
		dec.Watch = func(revoke func(tunnel.Decision)) func() {
			return p.register(req, gen, func(d authz.Decision) {
				p.stats.inHBONERevoked.Add(1)
				p.log.Info("dataplane: live HBONE stream closed by a policy change", "source", r.Source.String(),
					"src", r.SourceAddr.String(), "dst", r.Destination.String(), "reason", d.Reason, "policy", d.Policy)
				revoke(tunnel.Decision{Reason: d.Reason, Policy: d.Policy})
			})
		}
	}
	return dec
}

// dialApp reaches the app inside the pod with ambit's marked socket (the
// capture lets it through instead of steering it to 15006 again).
func (p *Pod) dialApp(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	return p.cfg.Capture.Dial(ctx, p.cfg.PodID, "tcp", dst.String())
}

// handlePlain carries one plaintext inbound connection (15006): the
// original destination is the accepted socket's local address.
func (p *Pod) handlePlain(c net.Conn) {
	p.stats.inPlain.Add(1)
	dst, src := addrPortOf(c.LocalAddr()), addrPortOf(c.RemoteAddr())
	ci := &tunnel.ConnInfo{Direction: tunnel.Inbound, Destination: p.cfg.Identity,
		SourceAddr: src, DestAddr: dst, Start: p.cfg.Now()}
	if !p.ownAddr(dst.Addr()) {
		// sk_lookup only steers the pod's own addresses here.
		p.stats.inPlainDenied.Add(1)
		p.log.Warn("dataplane: plaintext inbound to an address not the pod's, refused", "dst", dst.String(), "src", src.String())
		refuse(c)
		ci.Outcome, ci.Reason = tunnel.OutcomeBadRequest, "destination is not the pod's address"
		p.failed(ci)
		return
	}
	req := authz.Request{
		Workload:    p.cfg.Workload,
		Source:      authz.Source{IP: src.Addr()},
		Destination: authz.Destination{IP: dst.Addr(), Port: dst.Port()},
		Secure:      false,
	}
	gen := p.generation()
	d := p.cfg.Authorizer.Decide(req)
	ci.Policy, ci.Reason = d.Policy, d.Reason
	if !d.Allow {
		p.stats.inPlainDenied.Add(1)
		p.log.Info("dataplane: plaintext inbound denied", "src", src.String(), "dst", dst.String(),
			"reason", d.Reason, "policy", d.Policy, "mtls", string(d.MTLSMode))
		refuse(c)
		ci.Outcome = tunnel.OutcomeDenied
		p.failed(ci)
		return
	}
	app, err := p.dialApp(p.ctx, dst)
	if err != nil {
		p.stats.inPlainFailed.Add(1)
		p.log.Info("dataplane: app dial failed", "dst", dst.String(), "err", err)
		refuse(c)
		ci.Outcome, ci.Err = tunnel.OutcomeUpstreamRefused, err
		p.failed(ci)
		return
	}
	var revoked atomic.Pointer[authz.Decision]
	if p.cfg.Live != nil {
		unregister := p.register(req, gen, func(d authz.Decision) {
			revoked.Store(&d)
			p.stats.inPlainRevoked.Add(1)
			p.log.Info("dataplane: live plaintext connection closed by a policy change", "src", src.String(),
				"dst", dst.String(), "reason", d.Reason, "policy", d.Policy)
			refuse(c)
			refuse(app) // a reset both ways, as for a revoked HBONE stream
		})
		defer unregister()
	}
	p.splice(ci, c, app, &revoked)
}

func (p *Pod) ownAddr(a netip.Addr) bool {
	for _, x := range p.cfg.Addrs {
		if x == a {
			return true
		}
	}
	return false
}

// generationer is the optional part of an Authorizer that tells whether
// policies may have changed. *authz.Engine satisfies it.
type generationer interface{ Generation() uint64 }

// generation is the Authorizer's generation, 0 when it does not count.
func (p *Pod) generation() uint64 {
	if g, ok := p.cfg.Authorizer.(generationer); ok {
		return g.Generation()
	}
	return 0
}

// register adds an allowed connection to Config.Live. decidedAt is the
// Authorizer's generation read before the decision: an Update that lands
// between the decision and the registration has its Recheck miss this
// connection, so when the generation moved the request is decided again
// here and close is called at once if it is now denied. close runs at most
// once, whichever of this check and a Recheck gets there first.
func (p *Pod) register(req authz.Request, decidedAt uint64, close func(authz.Decision)) (unregister func()) {
	var once sync.Once
	closeOnce := func(d authz.Decision) { once.Do(func() { close(d) }) }
	unregister = p.cfg.Live.Register(req, closeOnce)
	if g, ok := p.cfg.Authorizer.(generationer); ok && g.Generation() != decidedAt {
		if d := p.cfg.Authorizer.Decide(req); !d.Allow {
			unregister()
			closeOnce(d)
		}
	}
	return unregister
}

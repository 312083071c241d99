package dataplane

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/tunnel"
)

// authorizeHBONE adapts the policy engine to the tunnel server: the source
// principal is the one verified in the TLS handshake (Secure), the source IP
// the tunnel's TCP peer, the destination the CONNECT authority (pod IP and
// target port, already checked against the pod's addresses by the server).
func (p *Pod) authorizeHBONE(_ context.Context, r tunnel.AuthzRequest) tunnel.Decision {
	d := p.cfg.Authorizer.Decide(authz.Request{
		Workload:    p.cfg.Workload,
		Source:      authz.Source{Principal: r.Source, IP: r.SourceAddr.Addr().Unmap()},
		Destination: authz.Destination{IP: r.Destination.Addr(), Port: r.Destination.Port()},
		Secure:      !r.Source.IsZero(),
	})
	return tunnel.Decision{Allow: d.Allow, Reason: d.Reason, Policy: d.Policy}
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
		unregister := p.cfg.Live.Register(req, func(d authz.Decision) {
			revoked.Store(&d)
			p.stats.inPlainRevoked.Add(1)
			p.log.Info("dataplane: live plaintext connection closed by a policy change", "src", src.String(),
				"dst", dst.String(), "reason", d.Reason, "policy", d.Policy)
			refuse(c)
			app.Close()
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

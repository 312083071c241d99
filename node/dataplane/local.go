package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"

	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/tunnel"
)

// The same-node shortcut: an HBONE route whose endpoint is a pod of this
// node joins the source app's connection to a marked dial into the
// destination pod, with no TLS and no HTTP/2, deciding and watching it as
// the destination's HBONE server would (docs/performance.md).

// localPeer returns the running data path of route's destination when the
// shortcut applies: a Node set Config.local, the route's tunnel is the
// endpoint's own (no gateway in between), and the pod there has the
// identity the route expects. Otherwise nil: the tunnel carries it.
func (p *Pod) localPeer(route tables.Route) *Pod {
	if p.cfg.local == nil || route.Tunnel.Addr() != route.Endpoint.Addr() {
		return nil
	}
	d := p.cfg.local(route.Endpoint.Addr())
	if d == nil || d.cfg.Identity != route.Identity {
		return nil
	}
	return d
}

// enterLocal counts a shortcut connection into d's drain; false once d is
// stopping (the caller then uses the tunnel, which reaches whichever data
// path serves d's address now).
func (d *Pod) enterLocal() bool {
	d.localMu.Lock()
	defer d.localMu.Unlock()
	if d.localStopping {
		return false
	}
	d.localWG.Add(1)
	return true
}

// outboundLocal carries app from p to the pod d of this node: the
// destination's checks (loop ports, authorization with the source's
// identity as authenticated, live revocation), a marked dial to the app in
// d, a splice in this process, and one outbound report (p's hooks) and one
// inbound report (d's hooks), each with both identities. It returns false,
// having done nothing, when d is stopping.
func (p *Pod) outboundLocal(app net.Conn, ci *tunnel.ConnInfo, route tables.Route, d *Pod) bool {
	if !d.enterLocal() {
		return false
	}
	defer d.localWG.Done()
	p.stats.outLocal.Add(1)
	d.stats.inLocal.Add(1)
	dst := route.Endpoint
	out := *ci
	out.Destination, out.DestAddr = d.cfg.Identity, dst
	in := tunnel.ConnInfo{Direction: tunnel.Inbound, Source: p.cfg.Identity, Destination: d.cfg.Identity,
		SourceAddr: ci.SourceAddr, DestAddr: dst, Start: ci.Start, Forwarded: ci.Forwarded}
	fail := func(outcome, reason string, err error) {
		refuse(app)
		p.stats.outFailed.Add(1)
		out.Outcome, out.Reason, out.Err = outcome, reason, err
		in.Outcome, in.Reason, in.Err = outcome, reason, err
		p.failed(&out)
		d.failed(&in)
	}
	if d.reserved[dst.Port()] {
		if d.cfg.Hooks.OnRefuse != nil {
			d.cfg.Hooks.OnRefuse(tunnel.RefuseInfo{Reason: tunnel.RefuseLoop, Peer: p.cfg.Identity, PeerAddr: ci.SourceAddr})
		}
		d.log.Warn("dataplane: same-node connection to one of the daemon's own ports refused (loop)",
			"source", p.cfg.Identity.String(), "dst", dst.String())
		fail(tunnel.OutcomeBadRequest, "destination port is one of the daemon's own listeners (loop)",
			fmt.Errorf("%w: %s is a daemon listener", tunnel.ErrBadRequest, dst))
		return true
	}
	// The daemon holds the source's identity (it captured the app's
	// connection in the source pod): the request is as secure as a verified
	// mTLS peer, so PeerAuthentication STRICT admits it and principal rules
	// apply.
	req := authz.Request{
		Workload:    d.cfg.Workload,
		Source:      authz.Source{Principal: p.cfg.Identity, IP: ci.SourceAddr.Addr()},
		Destination: authz.Destination{IP: dst.Addr(), Port: dst.Port()},
		Secure:      true,
	}
	gen := d.generation()
	dec := d.cfg.Authorizer.Decide(req)
	in.Policy = dec.Policy
	if !dec.Allow {
		d.stats.inLocalDenied.Add(1)
		reason := dec.Reason
		if reason == "" {
			reason = "denied by authorization"
		}
		d.log.Info("dataplane: same-node connection denied", "source", p.cfg.Identity.String(), "dst", dst.String(),
			"reason", reason, "policy", dec.Policy)
		fail(tunnel.OutcomeDenied, reason, fmt.Errorf("%w: %s", tunnel.ErrDenied, reason))
		return true
	}
	up, err := d.dialApp(p.ctx, dst)
	if err != nil {
		d.log.Info("dataplane: app dial failed", "dst", dst.String(), "err", err)
		fail(tunnel.OutcomeUpstreamRefused, "dial "+dst.String()+": "+err.Error(), fmt.Errorf("%w: %w", tunnel.ErrUpstream, err))
		return true
	}
	var revoked atomic.Pointer[authz.Decision]
	if d.cfg.Live != nil {
		unregister := d.register(req, gen, func(x authz.Decision) {
			revoked.Store(&x)
			d.stats.inLocalRevoked.Add(1)
			d.log.Info("dataplane: live same-node connection closed by a policy change", "source", p.cfg.Identity.String(),
				"dst", dst.String(), "reason", x.Reason, "policy", x.Policy)
			refuse(app)
			refuse(up)
		})
		defer unregister()
	}
	// Either pod's stop deadline cuts the connection.
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	stop := context.AfterFunc(d.ctx, cancel)
	defer stop()
	out.Live = liveBytes(app)
	in.Live = out.Live
	if p.cfg.Hooks.OnStart != nil {
		p.cfg.Hooks.OnStart(&out)
	}
	if d.cfg.Hooks.OnStart != nil {
		d.cfg.Hooks.OnStart(&in)
	}
	sent, recv, err := tunnel.Splice(ctx, app, up, p.cfg.Settings)
	out.BytesSent, out.BytesRecv, in.BytesSent, in.BytesRecv = sent, recv, sent, recv
	switch x := revoked.Load(); {
	case x != nil:
		reason := "policy changed"
		if x.Reason != "" {
			reason += ": " + x.Reason
		}
		in.Outcome, in.Reason, in.Policy = tunnel.OutcomeRevoked, reason, x.Policy
		in.Err = fmt.Errorf("%w: %s", tunnel.ErrRevoked, reason)
		out.Outcome, out.Err = tunnel.OutcomeReset, in.Err // as the tunnel client sees a revoked stream
	case ctx.Err() != nil:
		in.Outcome, in.Err = tunnel.OutcomeShutdown, err
		out.Outcome, out.Err = tunnel.OutcomeShutdown, err
	case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		in.Outcome, in.Err = tunnel.OutcomeReset, err
		out.Outcome, out.Err = tunnel.OutcomeReset, err
	}
	now := p.cfg.Now()
	out.Duration, in.Duration = now.Sub(out.Start), now.Sub(in.Start)
	if p.cfg.Hooks.OnEnd != nil {
		p.cfg.Hooks.OnEnd(&out)
	}
	if d.cfg.Hooks.OnEnd != nil {
		d.cfg.Hooks.OnEnd(&in)
	}
	return true
}

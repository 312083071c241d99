package dataplane

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/tunnel"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// sourceAddr is the pod address of dst's family: the app's connection was
// rewritten to loopback, so the accepted socket does not tell it.
func (p *Pod) sourceAddr(dst netip.Addr) netip.Addr {
	for _, a := range p.cfg.Addrs {
		if a.Is4() == dst.Is4() {
			return a
		}
	}
	return p.cfg.Addrs[0]
}

// handleOutbound carries one captured outbound connection.
func (p *Pod) handleOutbound(app net.Conn) {
	p.stats.outAccepted.Add(1)
	ci := &tunnel.ConnInfo{Direction: tunnel.Outbound, Source: p.cfg.Identity, Start: p.cfg.Now()}
	dst, err := p.cfg.Capture.OriginalDst(app)
	if err != nil {
		// Not captured by us, or the record was evicted: nothing says where
		// it was going, so it cannot be carried.
		p.stats.noOrigDst.Add(1)
		p.log.Warn("dataplane: outbound connection without original destination, refused",
			"peer", app.RemoteAddr().String(), "err", err)
		refuse(app)
		ci.Outcome, ci.Err = tunnel.OutcomeBadRequest, err
		ci.Reason = "no original destination"
		p.failed(ci)
		return
	}
	src := p.sourceAddr(dst.Addr())
	// The app's socket was connected to loopback, but its port is the one
	// it has: the source is the pod's address with that port.
	ci.SourceAddr, ci.DestAddr = netip.AddrPortFrom(src, addrPortOf(app.RemoteAddr()).Port()), dst
	route := p.cfg.Router.Resolve(dst, src)
	ci.Reason = route.Reason
	if !route.Service.IsZero() {
		ci.Forwarded.Host = ServiceHost(route.Service, p.cfg.ClusterDomain)
	}
	switch route.Kind {
	case tables.HBONE:
		p.outboundHBONE(app, ci, route)
	case tables.Passthrough:
		p.outboundPassthrough(app, ci, route)
	default:
		p.stats.outDenied.Add(1)
		p.log.Info("dataplane: outbound connection denied by route", "dst", dst.String(), "reason", route.Reason)
		refuse(app)
		ci.Outcome = tunnel.OutcomeDenied
		p.failed(ci)
	}
}

// outboundHBONE tunnels app to route.Endpoint. The tunnel client reports
// the connection through the hooks itself.
func (p *Pod) outboundHBONE(app net.Conn, ci *tunnel.ConnInfo, route tables.Route) {
	if route.Identity.IsZero() || !route.Endpoint.IsValid() {
		p.stats.outDenied.Add(1)
		p.log.Warn("dataplane: HBONE route without endpoint or identity, refused", "dst", ci.DestAddr.String())
		refuse(app)
		ci.Outcome, ci.Reason = tunnel.OutcomeDenied, "route has no endpoint identity"
		p.failed(ci)
		return
	}
	if d := p.localPeer(route); d != nil && p.outboundLocal(app, ci, route, d) {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.DialTimeout)
	up, err := p.client.Dial(ctx, tunnel.DialRequest{
		Source:      p.cfg.Identity,
		SourceAddr:  ci.SourceAddr,
		Destination: route.Endpoint,
		Tunnel:      route.Tunnel,
		Expected:    []spiffeid.ID{route.Identity},
		Host:        ci.Forwarded.Host,
	})
	cancel()
	if err != nil {
		p.stats.outFailed.Add(1)
		level := p.log.Info
		if !errors.Is(err, tunnel.ErrDenied) {
			level = p.log.Warn
		}
		level("dataplane: outbound tunnel failed", "dst", ci.DestAddr.String(), "endpoint", route.Endpoint.String(),
			"expected", route.Identity.String(), "err", err)
		refuse(app)
		return
	}
	p.stats.outHBONE.Add(1)
	// The client's hooks already report this stream; splice without ours.
	tunnel.Splice(p.ctx, app, up, p.cfg.Settings)
}

// outboundPassthrough dials route.Endpoint in plain TCP from the pod.
func (p *Pod) outboundPassthrough(app net.Conn, ci *tunnel.ConnInfo, route tables.Route) {
	ci.DestAddr = route.Endpoint
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.DialTimeout)
	up, err := p.cfg.Capture.Dial(ctx, p.cfg.PodID, "tcp", route.Endpoint.String())
	cancel()
	if err != nil {
		p.stats.outFailed.Add(1)
		p.log.Info("dataplane: passthrough dial failed", "endpoint", route.Endpoint.String(), "err", err)
		refuse(app)
		ci.Outcome, ci.Err = tunnel.OutcomeUpstreamRefused, err
		p.failed(ci)
		return
	}
	p.stats.outPass.Add(1)
	p.splice(ci, app, up, nil)
}

// DefaultClusterDomain is the Kubernetes cluster domain of Service
// hostnames unless Config.ClusterDomain says otherwise.
const DefaultClusterDomain = "cluster.local"

// ServiceHost is a Service's hostname: <name>.<namespace>.svc.<domain>.
func ServiceHost(svc tables.Ref, domain string) string {
	return svc.Name + "." + svc.Namespace + ".svc." + domain
}

package tables

import (
	"fmt"
	"net/netip"
	"unique"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
)

// Kind is what to do with a captured connection.
type Kind uint8

const (
	// Deny refuses the connection (the zero Kind, so a forgotten Route
	// fails closed).
	Deny Kind = iota
	// Passthrough forwards plain TCP to Route.Endpoint.
	Passthrough
	// HBONE tunnels to Route.Tunnel, expecting Route.Identity, and asks
	// for Route.Endpoint.
	HBONE
)

func (k Kind) String() string {
	switch k {
	case Deny:
		return "Deny"
	case Passthrough:
		return "Passthrough"
	case HBONE:
		return "HBONE"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Reasons a Route gives.
const (
	ReasonEnrolled         = "endpoint enrolled"
	ReasonNotEnrolled      = "endpoint not enrolled"
	ReasonNotPod           = "endpoint is not a known pod"
	ReasonOutsideCluster   = "destination outside the cluster"
	ReasonUnknownInCluster = "unknown address inside the cluster ranges"
	ReasonUnknownDenied    = "unknown destination denied by configuration"
	ReasonNoServicePort    = "service has no such TCP port"
	ReasonNoReadyEndpoint  = "service has no ready endpoint"
	ReasonNoLocalEndpoint  = "service has internalTrafficPolicy=Local and no ready endpoint on this node"
	ReasonNoIdentity       = "endpoint pod has no valid SPIFFE identity"
)

// Ref names a namespaced object.
type Ref struct{ Namespace, Name string }

// String returns "namespace/name", or "" for the zero Ref.
func (r Ref) String() string {
	if r == (Ref{}) {
		return ""
	}
	return r.Namespace + "/" + r.Name
}

// IsZero reports whether r names nothing.
func (r Ref) IsZero() bool { return r == (Ref{}) }

// Route is the outcome of Resolve.
type Route struct {
	Kind Kind
	// Endpoint is the pod (or external) address and target port the
	// connection is for: the CONNECT authority for HBONE, the dial
	// address for Passthrough.
	Endpoint netip.AddrPort
	// Tunnel is <endpoint IP>:15008 for HBONE, zero otherwise.
	Tunnel netip.AddrPort
	// Identity is the SPIFFE ID the endpoint must present (HBONE only).
	Identity spiffeid.ID
	// Service is set when dst was a Service address.
	Service Ref
	// Workload is the endpoint pod, when known.
	Workload Ref
	// Reason explains Kind in words (one of the Reason* constants).
	Reason string
}

// Resolve decides where a connection captured from src to dst goes.
//
// A Service cluster IP picks a ready endpoint of the Service port dst's
// port maps to (the target port comes from the EndpointSlice port of the
// same name, so named target ports resolve per endpoint), spreading
// connections round robin. internalTrafficPolicy=Local keeps only
// endpoints on src's node (deny if none); a trafficDistribution preference
// (PreferClose, PreferSameZone, PreferSameNode) prefers them and falls
// back to all: ambit does not watch Nodes, so "same zone" is approximated
// by "same node", which is always in the same zone. With no ready
// endpoint, serving-but-terminating endpoints are used; with none of
// those either, the connection is denied.
//
// A pod IP (also how headless Services are reached) goes to that pod.
// An enrolled endpoint pod gets HBONE, anything else passthrough.
// Other addresses pass through unless Options.DenyUnknown.
//
// src is the captured pod's address; its node decides locality (the local
// node when src is unknown).
func (t *Tables) Resolve(dst netip.AddrPort, src netip.Addr) Route {
	addr := dst.Addr().Unmap()
	t.mu.RLock()
	defer t.mu.RUnlock()
	if s := t.svcByIP[addr]; s != nil {
		return t.resolveService(s, addr.Is6(), dst.Port(), src)
	}
	if w := t.byIP[addr]; w != nil {
		return t.toPod(w, netip.AddrPortFrom(addr, dst.Port()))
	}
	ep := netip.AddrPortFrom(addr, dst.Port())
	for _, p := range t.opts.ClusterCIDRs {
		if p.Contains(addr) {
			return Route{Kind: Passthrough, Endpoint: ep, Reason: ReasonUnknownInCluster}
		}
	}
	if t.opts.DenyUnknown {
		return Route{Kind: Deny, Endpoint: ep, Reason: ReasonUnknownDenied}
	}
	return Route{Kind: Passthrough, Endpoint: ep, Reason: ReasonOutsideCluster}
}

// toPod routes to an endpoint address, HBONE when it is an enrolled pod.
func (t *Tables) toPod(w *workload, ep netip.AddrPort) Route {
	r := Route{Kind: Passthrough, Endpoint: ep, Reason: ReasonNotPod}
	if w == nil {
		return r
	}
	r.Workload = Ref{w.ns.Value(), w.name}
	if !t.isEnrolled(w) {
		r.Reason = ReasonNotEnrolled
		return r
	}
	if w.id.IsZero() {
		// A pod whose namespace or service account cannot form an
		// identity cannot be verified: refuse rather than downgrade.
		return Route{Kind: Deny, Endpoint: ep, Workload: r.Workload, Reason: ReasonNoIdentity}
	}
	r.Kind, r.Identity, r.Reason = HBONE, w.id, ReasonEnrolled
	r.Tunnel = netip.AddrPortFrom(ep.Addr(), HBONEPort)
	return r
}

// candidate classes, best first.
const (
	classLocalReady = iota
	classReady
	classLocalFallback
	classFallback
	nClasses
)

func (t *Tables) resolveService(s *service, v6 bool, port uint16, src netip.Addr) Route {
	svcName := Ref{s.key.ns, s.key.name}
	var sp *ServicePort
	for i := range s.ports {
		if s.ports[i].Port == port && s.ports[i].Protocol == corev1.ProtocolTCP {
			sp = &s.ports[i]
			break
		}
	}
	if sp == nil {
		return Route{Kind: Deny, Service: svcName, Reason: ReasonNoServicePort}
	}
	node := intern(t.opts.LocalNode)
	if w := t.byIP[src.Unmap()]; w != nil {
		node = w.node
	}
	name := intern(sp.Name)
	slices := t.slices[s.key]

	// Pass 1: count candidates per class. Pass 2: take the n-th of the
	// chosen class. Two passes over the slices avoid allocating.
	var count [nClasses]int
	t.eachCandidate(slices, v6, name, node, func(class int, _ netip.AddrPort) bool {
		count[class]++
		return true
	})
	var allowed []int
	switch {
	case s.localOnly:
		allowed = []int{classLocalReady, classLocalFallback}
	case s.preferLocal:
		allowed = []int{classLocalReady, classReady, classLocalFallback, classFallback}
	default:
		allowed = []int{-1, -2} // ready (any node), then fallback (any node)
	}
	chosen, n := 0, 0
	for _, c := range allowed {
		switch c {
		case -1:
			n = count[classLocalReady] + count[classReady]
		case -2:
			n = count[classLocalFallback] + count[classFallback]
		default:
			n = count[c]
		}
		if n > 0 {
			chosen = c
			break
		}
	}
	if n == 0 {
		reason := ReasonNoReadyEndpoint
		if s.localOnly {
			reason = ReasonNoLocalEndpoint
		}
		return Route{Kind: Deny, Service: svcName, Reason: reason}
	}
	want := int(s.next.Add(1)-1) % n
	var ep netip.AddrPort
	t.eachCandidate(slices, v6, name, node, func(class int, a netip.AddrPort) bool {
		switch chosen {
		case -1:
			if class != classLocalReady && class != classReady {
				return true
			}
		case -2:
			if class != classLocalFallback && class != classFallback {
				return true
			}
		default:
			if class != chosen {
				return true
			}
		}
		if want == 0 {
			ep = a
			return false
		}
		want--
		return true
	})
	r := t.toPod(t.byIP[ep.Addr()], ep)
	r.Service = svcName
	return r
}

// eachCandidate calls fn for every endpoint of the wanted family that has
// a TCP port named name, with its class; fn returns false to stop.
func (t *Tables) eachCandidate(slices []*slice, v6 bool, name, node unique.Handle[string], fn func(class int, a netip.AddrPort) bool) {
	for _, sl := range slices {
		if sl.v6 != v6 {
			continue
		}
		var port uint16
		for _, p := range sl.ports {
			if p.name == name && p.proto == corev1.ProtocolTCP {
				port = p.port
				break
			}
		}
		if port == 0 {
			continue
		}
		for i := range sl.endpoints {
			e := &sl.endpoints[i]
			local := e.node == node
			var class int
			switch {
			case e.ready && local:
				class = classLocalReady
			case e.ready:
				class = classReady
			case e.fallback && local:
				class = classLocalFallback
			case e.fallback:
				class = classFallback
			default:
				continue
			}
			if !fn(class, netip.AddrPortFrom(e.addr, port)) {
				return
			}
		}
	}
}

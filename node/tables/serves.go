package tables

import "net/netip"

// Serves reports whether ep (a pod address and target port) is an
// endpoint of the Service svc, ready or not: metrics believe a Service
// name a peer sends only when the Service has the connection's
// destination behind it. It costs one pass over that Service's
// EndpointSlices.
func (t *Tables) Serves(svc Ref, ep netip.AddrPort) bool {
	addr := ep.Addr().Unmap()
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, s := range t.slices[objKey{svc.Namespace, svc.Name}] {
		port := false
		for _, p := range s.ports {
			if p.port == ep.Port() {
				port = true
				break
			}
		}
		if !port {
			continue
		}
		for _, e := range s.endpoints {
			if e.addr == addr {
				return true
			}
		}
	}
	return false
}

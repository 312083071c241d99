package tables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unique"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// slice is the compact record of an EndpointSlice.
type slice struct {
	name      string
	v6        bool
	ports     []slicePort
	endpoints []endpoint
}

type slicePort struct {
	name  unique.Handle[string]
	port  uint16
	proto corev1.Protocol
}

// endpoint keeps the first address only: the API documents that consumers
// must use the first, and every address is of the slice's type.
type endpoint struct {
	addr netip.Addr
	node unique.Handle[string]
	// ready: Ready unset or true. fallback: serving and terminating,
	// used only when a port has no ready endpoint at all (as kube-proxy
	// does, so connections drain to terminating pods rather than fail).
	ready, fallback bool
}

func newSlice(s *discoveryv1.EndpointSlice) (*slice, error) {
	rec := &slice{}
	switch s.AddressType {
	case discoveryv1.AddressTypeIPv4:
	case discoveryv1.AddressTypeIPv6:
		rec.v6 = true
	default:
		return nil, nil // FQDN slices carry no addresses ambit can route to
	}
	for _, p := range s.Ports {
		if p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
			continue // no port: the slice applies to no Service port
		}
		sp := slicePort{port: uint16(*p.Port), proto: corev1.ProtocolTCP}
		if p.Name != nil {
			sp.name = intern(*p.Name)
		} else {
			sp.name = intern("")
		}
		if p.Protocol != nil {
			sp.proto = *p.Protocol
		}
		rec.ports = append(rec.ports, sp)
	}
	rec.endpoints = make([]endpoint, 0, len(s.Endpoints))
	for _, e := range s.Endpoints {
		if len(e.Addresses) == 0 {
			continue
		}
		a, err := netip.ParseAddr(e.Addresses[0])
		if err != nil {
			return nil, fmt.Errorf("endpoint address %q: %w", e.Addresses[0], err)
		}
		a = a.Unmap()
		if a.Is6() != rec.v6 {
			return nil, fmt.Errorf("endpoint address %v does not match address type %s", a, s.AddressType)
		}
		c := e.Conditions
		ep := endpoint{
			addr:  a,
			ready: c.Ready == nil || *c.Ready,
		}
		serving := c.Serving == nil || *c.Serving
		terminating := c.Terminating != nil && *c.Terminating
		ep.fallback = serving && terminating
		if e.NodeName != nil {
			ep.node = intern(*e.NodeName)
		}
		rec.endpoints = append(rec.endpoints, ep)
	}
	return rec, nil
}

func (t *Tables) upsertSlice(s *discoveryv1.EndpointSlice) {
	k := objKey{s.Namespace, s.Name}
	svcName := s.Labels[discoveryv1.LabelServiceName]
	rec, err := newSlice(s)
	if err != nil {
		t.bad("EndpointSlice", k, err)
		return
	}
	t.write(func(*[]Event) {
		t.removeSlice(k)
		if svcName == "" || rec == nil {
			return // not a Service's slice, or not routable
		}
		sk := objKey{s.Namespace, svcName}
		rec.name = s.Name
		list := t.slices[sk]
		i, _ := slices.BinarySearchFunc(list, s.Name, func(e *slice, n string) int { return strings.Compare(e.name, n) })
		t.slices[sk] = slices.Insert(list, i, rec)
		t.sliceSvc[k] = sk
	})
}

// removeSlice forgets slice k wherever it was filed.
func (t *Tables) removeSlice(k objKey) {
	sk, ok := t.sliceSvc[k]
	if !ok {
		return
	}
	delete(t.sliceSvc, k)
	list := t.slices[sk]
	i, found := slices.BinarySearchFunc(list, k.name, func(e *slice, n string) int { return strings.Compare(e.name, n) })
	if !found {
		return
	}
	if list = slices.Delete(list, i, i+1); len(list) == 0 {
		delete(t.slices, sk)
	} else {
		t.slices[sk] = list
	}
}

func (t *Tables) deleteSlice(s *discoveryv1.EndpointSlice) {
	t.write(func(*[]Event) { t.removeSlice(objKey{s.Namespace, s.Name}) })
}

package tables

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
)

// service is the compact record of a Service.
type service struct {
	key      objKey
	ips      []netip.Addr
	ports    []ServicePort
	headless bool
	// localOnly: internalTrafficPolicy=Local; preferLocal: a
	// trafficDistribution preference (see Resolve).
	localOnly, preferLocal bool
	distribution           string
	// next spreads connections over endpoints (round robin).
	next atomic.Uint32
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name     string
	Port     uint16
	Protocol corev1.Protocol
	// TargetPort is the number, or TargetPortName the container port name
	// (resolved per endpoint through the EndpointSlice port of the same
	// Service port name).
	TargetPort     uint16
	TargetPortName string
}

// Service is a copy of one Service's record.
type Service struct {
	Namespace, Name      string
	ClusterIPs           []netip.Addr
	Ports                []ServicePort
	Headless             bool
	InternalTrafficLocal bool
	TrafficDistribution  string
}

func newService(s *corev1.Service) (*service, error) {
	rec := &service{key: objKey{s.Namespace, s.Name}}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	for _, ip := range ips {
		if ip == corev1.ClusterIPNone {
			rec.headless = true
			continue
		}
		if ip == "" {
			continue
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("cluster IP %q: %w", ip, err)
		}
		rec.ips = append(rec.ips, a.Unmap())
	}
	for _, p := range s.Spec.Ports {
		if p.Port <= 0 || p.Port > 65535 {
			return nil, fmt.Errorf("port %d out of range", p.Port)
		}
		sp := ServicePort{Name: p.Name, Port: uint16(p.Port), Protocol: p.Protocol}
		if sp.Protocol == "" {
			sp.Protocol = corev1.ProtocolTCP
		}
		switch {
		case p.TargetPort.StrVal != "":
			sp.TargetPortName = p.TargetPort.StrVal
		case p.TargetPort.IntVal > 0 && p.TargetPort.IntVal <= 65535:
			sp.TargetPort = uint16(p.TargetPort.IntVal)
		default:
			sp.TargetPort = sp.Port // unset targetPort defaults to port
		}
		rec.ports = append(rec.ports, sp)
	}
	rec.localOnly = s.Spec.InternalTrafficPolicy != nil && *s.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	if d := s.Spec.TrafficDistribution; d != nil {
		rec.distribution = *d
		switch *d {
		case corev1.ServiceTrafficDistributionPreferClose, corev1.ServiceTrafficDistributionPreferSameZone,
			corev1.ServiceTrafficDistributionPreferSameNode:
			rec.preferLocal = true
		}
	}
	return rec, nil
}

func (t *Tables) upsertService(s *corev1.Service) {
	k := objKey{s.Namespace, s.Name}
	rec, err := newService(s)
	if err != nil {
		t.bad("Service", k, err)
		return
	}
	t.write(func(*[]Event) {
		if old := t.services[k]; old != nil {
			t.unindexService(old)
			rec.next.Store(old.next.Load())
		}
		t.services[k] = rec
		for _, a := range rec.ips {
			t.svcByIP[a] = rec
		}
	})
}

func (t *Tables) unindexService(s *service) {
	for _, a := range s.ips {
		if t.svcByIP[a] == s {
			delete(t.svcByIP, a)
		}
	}
}

func (t *Tables) deleteService(s *corev1.Service) {
	k := objKey{s.Namespace, s.Name}
	t.write(func(*[]Event) {
		if old := t.services[k]; old != nil {
			t.unindexService(old)
			delete(t.services, k)
		}
	})
}

// Service returns the Service namespace/name.
func (t *Tables) Service(namespace, name string) (Service, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s := t.services[objKey{namespace, name}]
	if s == nil {
		return Service{}, false
	}
	return Service{
		Namespace: s.key.ns, Name: s.key.name,
		ClusterIPs: append([]netip.Addr(nil), s.ips...),
		Ports:      append([]ServicePort(nil), s.ports...),
		Headless:   s.headless, InternalTrafficLocal: s.localOnly,
		TrafficDistribution: s.distribution,
	}, true
}

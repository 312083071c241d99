package watch

import (
	"github.com/ambit-mesh/ambit/node/tables"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Transform is the informers' cache.TransformFunc: it replaces each Pod
// with a *tables.CompactPod, and each Namespace, Service and EndpointSlice
// with a copy holding only the fields ambit reads (see node/tables), before
// the object enters the informer's cache. managedFields, annotations, owner references, container specs,
// volumes, conditions and statuses are dropped: for a typical pod this
// is most of the object, and the cache holds every pod of the cluster.
//
// It builds new objects rather than clearing fields, so whatever a future
// API version adds is dropped too; it is idempotent (client-go may
// transform an object again on a relist), and passes other types through
// with only managedFields and annotations removed.
func Transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return tables.CompactPodFrom(o), nil
	case *corev1.Namespace:
		return &corev1.Namespace{ObjectMeta: stripMeta(&o.ObjectMeta)}, nil
	case *corev1.Service:
		return stripService(o), nil
	case *discoveryv1.EndpointSlice:
		return stripSlice(o), nil
	case metav1.Object:
		o.SetManagedFields(nil)
		o.SetAnnotations(nil)
		return obj, nil
	}
	return obj, nil
}

// stripMeta keeps what identifies the object, its labels, and what the
// informer needs (resourceVersion, deletionTimestamp).
func stripMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID,
		ResourceVersion: m.ResourceVersion, Labels: m.Labels,
		DeletionTimestamp: m.DeletionTimestamp,
	}
}

func stripService(s *corev1.Service) *corev1.Service {
	ports := make([]corev1.ServicePort, len(s.Spec.Ports))
	for i, p := range s.Spec.Ports {
		ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, TargetPort: p.TargetPort}
	}
	return &corev1.Service{
		ObjectMeta: stripMeta(&s.ObjectMeta),
		Spec: corev1.ServiceSpec{
			Type: s.Spec.Type, ClusterIP: s.Spec.ClusterIP, ClusterIPs: s.Spec.ClusterIPs, Ports: ports,
			InternalTrafficPolicy: s.Spec.InternalTrafficPolicy, TrafficDistribution: s.Spec.TrafficDistribution,
		},
	}
}

func stripSlice(s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	eps := make([]discoveryv1.Endpoint, len(s.Endpoints))
	for i, e := range s.Endpoints {
		eps[i] = discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: e.Conditions, NodeName: e.NodeName}
		if e.TargetRef != nil {
			eps[i].TargetRef = &corev1.ObjectReference{Kind: e.TargetRef.Kind, Namespace: e.TargetRef.Namespace, Name: e.TargetRef.Name}
		}
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  stripMeta(&s.ObjectMeta),
		AddressType: s.AddressType, Ports: s.Ports, Endpoints: eps,
	}
}

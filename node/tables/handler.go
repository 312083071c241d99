package tables

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

var _ cache.ResourceEventHandler = (*Tables)(nil)

// OnAdd applies an added Pod (*corev1.Pod or *CompactPod), Namespace, Service or EndpointSlice. Tables
// is the event handler of all four informers; tests and benchmarks call it
// directly with synthetic objects. Other types are ignored.
func (t *Tables) OnAdd(obj any, _ bool) { t.upsert(obj) }

// OnUpdate applies the new state of an object; the old one is not needed
// since the tables remember what they indexed.
func (t *Tables) OnUpdate(_, obj any) { t.upsert(obj) }

// OnDelete removes an object; it accepts cache.DeletedFinalStateUnknown
// tombstones.
func (t *Tables) OnDelete(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		t.deletePod(CompactPodFrom(o))
	case *CompactPod:
		t.deletePod(o)
	case *corev1.Namespace:
		t.deleteNamespace(o)
	case *corev1.Service:
		t.deleteService(o)
	case *discoveryv1.EndpointSlice:
		t.deleteSlice(o)
	}
}

func (t *Tables) upsert(obj any) {
	switch o := obj.(type) {
	case *corev1.Pod:
		t.upsertPod(CompactPodFrom(o))
	case *CompactPod:
		t.upsertPod(o)
	case *corev1.Namespace:
		t.upsertNamespace(o)
	case *corev1.Service:
		t.upsertService(o)
	case *discoveryv1.EndpointSlice:
		t.upsertSlice(o)
	}
}

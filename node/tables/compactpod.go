package tables

import (
	"net/netip"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// CompactPod is the form in which the pod informer caches pods (node/watch
// installs a transform that produces it): the fields the tables read and
// what the informer machinery needs (name, namespace, UID,
// resourceVersion), with interned strings. A *corev1.Pod costs at least
// 1,240 bytes for the struct alone plus a labels map, and the cache holds
// every pod of the cluster; a CompactPod is a few hundred bytes. The
// handlers accept both.
//
// It implements runtime.Object and metav1.Object so that client-go's
// stores, key functions and indexers work on it; setters of fields it does
// not keep are no-ops and getters return zero values.
type CompactPod struct {
	Namespace, Name, ResourceVersion string
	UID                              types.UID
	Labels                           Labels
	Node, ServiceAccount             unique.Handle[string]
	Phase                            corev1.PodPhase
	IPs                              []netip.Addr
	HostNetwork, Deleting            bool
	// BadIP is the first pod IP that did not parse ("" if none); the
	// tables reject such a pod as invalid.
	BadIP string
}

// CompactPodFrom converts a pod.
func CompactPodFrom(p *corev1.Pod) *CompactPod {
	c := &CompactPod{
		Namespace: p.Namespace, Name: p.Name, ResourceVersion: p.ResourceVersion, UID: p.UID,
		Labels: makeLabels(p.Labels),
		Node:   intern(p.Spec.NodeName), ServiceAccount: intern(p.Spec.ServiceAccountName),
		Phase:       p.Status.Phase,
		HostNetwork: p.Spec.HostNetwork, Deleting: p.DeletionTimestamp != nil,
	}
	add := func(s string) {
		if s == "" || c.BadIP != "" {
			return
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			c.BadIP = s
			return
		}
		a = a.Unmap()
		for _, have := range c.IPs {
			if have == a {
				return
			}
		}
		c.IPs = append(c.IPs, a)
	}
	add(p.Status.PodIP)
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	return c
}

var (
	_ runtime.Object = (*CompactPod)(nil)
	_ metav1.Object  = (*CompactPod)(nil)
)

// GetObjectKind implements runtime.Object.
func (c *CompactPod) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (c *CompactPod) DeepCopyObject() runtime.Object {
	d := *c
	d.IPs = append([]netip.Addr(nil), c.IPs...)
	return &d // Labels are immutable and shared
}

// The metav1.Object methods.

func (c *CompactPod) GetNamespace() string                          { return c.Namespace }
func (c *CompactPod) SetNamespace(ns string)                        { c.Namespace = ns }
func (c *CompactPod) GetName() string                               { return c.Name }
func (c *CompactPod) SetName(name string)                           { c.Name = name }
func (c *CompactPod) GetGenerateName() string                       { return "" }
func (c *CompactPod) SetGenerateName(string)                        {}
func (c *CompactPod) GetUID() types.UID                             { return c.UID }
func (c *CompactPod) SetUID(uid types.UID)                          { c.UID = uid }
func (c *CompactPod) GetResourceVersion() string                    { return c.ResourceVersion }
func (c *CompactPod) SetResourceVersion(v string)                   { c.ResourceVersion = v }
func (c *CompactPod) GetGeneration() int64                          { return 0 }
func (c *CompactPod) SetGeneration(int64)                           {}
func (c *CompactPod) GetSelfLink() string                           { return "" }
func (c *CompactPod) SetSelfLink(string)                            {}
func (c *CompactPod) GetCreationTimestamp() metav1.Time             { return metav1.Time{} }
func (c *CompactPod) SetCreationTimestamp(metav1.Time)              {}
func (c *CompactPod) GetDeletionGracePeriodSeconds() *int64         { return nil }
func (c *CompactPod) SetDeletionGracePeriodSeconds(*int64)          {}
func (c *CompactPod) GetLabels() map[string]string                  { return c.Labels.Map() }
func (c *CompactPod) SetLabels(l map[string]string)                 { c.Labels = makeLabels(l) }
func (c *CompactPod) GetAnnotations() map[string]string             { return nil }
func (c *CompactPod) SetAnnotations(map[string]string)              {}
func (c *CompactPod) GetFinalizers() []string                       { return nil }
func (c *CompactPod) SetFinalizers([]string)                        {}
func (c *CompactPod) GetOwnerReferences() []metav1.OwnerReference   { return nil }
func (c *CompactPod) SetOwnerReferences([]metav1.OwnerReference)    {}
func (c *CompactPod) GetManagedFields() []metav1.ManagedFieldsEntry { return nil }
func (c *CompactPod) SetManagedFields([]metav1.ManagedFieldsEntry)  {}
func (c *CompactPod) GetDeletionTimestamp() *metav1.Time {
	if c.Deleting {
		return &metav1.Time{}
	}
	return nil
}
func (c *CompactPod) SetDeletionTimestamp(t *metav1.Time) { c.Deleting = t != nil }

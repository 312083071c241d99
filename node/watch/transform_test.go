package watch

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/ambit-mesh/ambit/node/tables"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func fullMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: "uid-1", ResourceVersion: "42",
		Labels:          map[string]string{"app": "web"},
		Annotations:     map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"big":"json"}`},
		ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}},
		OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-123"}},
		Finalizers:      []string{"x"},
	}
}

func TestTransformPod(t *testing.T) {
	in := &corev1.Pod{
		ObjectMeta: fullMeta("shop", "web-1"),
		Spec: corev1.PodSpec{
			NodeName: "node-a", ServiceAccountName: "web", HostNetwork: true,
			Containers: []corev1.Container{{Name: "app", Image: "web:1", Env: []corev1.EnvVar{{Name: "A", Value: "b"}}}},
			Volumes:    []corev1.Volume{{Name: "v"}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}},
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app"}},
		},
	}
	got, err := Transform(in)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := got.(*tables.CompactPod)
	if !ok {
		t.Fatalf("Transform(pod) = %T, want *tables.CompactPod", got)
	}
	if c.Namespace != "shop" || c.Name != "web-1" || c.UID != "uid-1" || c.ResourceVersion != "42" ||
		c.Labels.Get("app") != "web" || len(c.Labels) != 1 || c.Node.Value() != "node-a" || c.ServiceAccount.Value() != "web" ||
		!c.HostNetwork || c.Phase != corev1.PodRunning || c.Deleting || c.BadIP != "" ||
		!slices.Equal(c.IPs, []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}) {
		t.Fatalf("Transform(pod) = %+v", c)
	}
	if c.GetAnnotations() != nil || c.GetManagedFields() != nil || c.GetOwnerReferences() != nil {
		t.Fatal("compact pod reports stripped metadata")
	}
	again, _ := Transform(got)
	if again != got {
		t.Fatal("Transform of a compact pod is not the identity")
	}
	cp := c.DeepCopyObject().(*tables.CompactPod)
	if !reflect.DeepEqual(cp, c) {
		t.Fatal("DeepCopyObject differs")
	}
	if in.Annotations == nil || len(in.Spec.Containers) != 1 {
		t.Fatal("Transform modified its input")
	}
}

func TestTransformServiceSliceNamespace(t *testing.T) {
	local := corev1.ServiceInternalTrafficPolicyLocal
	prefer := "PreferClose"
	svc := &corev1.Service{
		ObjectMeta: fullMeta("shop", "web"),
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.1", ClusterIPs: []string{"10.96.0.1", "fd00::96:1"},
			Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP, AppProtocol: new(string)}},
			Selector:              map[string]string{"app": "web"},
			InternalTrafficPolicy: &local, TrafficDistribution: &prefer,
			SessionAffinity: corev1.ServiceAffinityClientIP,
		},
	}
	gotSvc, _ := Transform(svc)
	s := gotSvc.(*corev1.Service)
	if s.Annotations != nil || s.ManagedFields != nil || s.OwnerReferences != nil || s.Spec.Selector != nil || s.Spec.SessionAffinity != "" {
		t.Fatalf("service not stripped: %+v", s)
	}
	if s.Spec.ClusterIP != "10.96.0.1" || len(s.Spec.ClusterIPs) != 2 || *s.Spec.InternalTrafficPolicy != local ||
		*s.Spec.TrafficDistribution != prefer || s.Spec.Ports[0].TargetPort.StrVal != "http" || s.Spec.Ports[0].AppProtocol != nil {
		t.Fatalf("service lost fields: %+v", s.Spec)
	}

	name, port, host := "http", int32(8080), "h"
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  fullMeta("shop", "web-abc"),
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses: []string{"10.0.0.1"}, NodeName: &host, Hostname: &host,
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web-1", UID: "u", ResourceVersion: "9"},
			Hints:     &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z"}}},
		}},
	}
	gotSl, _ := Transform(sl)
	e := gotSl.(*discoveryv1.EndpointSlice)
	if e.Annotations != nil || e.ManagedFields != nil || e.Endpoints[0].Hostname != nil || e.Endpoints[0].Hints != nil {
		t.Fatalf("slice not stripped: %+v", e)
	}
	wantRef := &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web-1"}
	if e.Labels["app"] != "web" || *e.Endpoints[0].NodeName != host ||
		!reflect.DeepEqual(e.Endpoints[0].TargetRef, wantRef) || *e.Ports[0].Name != "http" || e.AddressType != discoveryv1.AddressTypeIPv4 {
		t.Fatalf("slice lost fields: %+v", e)
	}

	n := &corev1.Namespace{ObjectMeta: fullMeta("", "shop"), Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}}}
	gotNs, _ := Transform(n)
	want := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", UID: "uid-1", ResourceVersion: "42", Labels: map[string]string{"app": "web"}}}
	if !reflect.DeepEqual(gotNs, want) {
		t.Fatalf("namespace: %+v", gotNs)
	}
}

func TestTransformOtherTypes(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: fullMeta("a", "b"), Data: map[string]string{"k": "v"}}
	got, err := Transform(cm)
	if err != nil || got != any(cm) || cm.ManagedFields != nil || cm.Annotations != nil || cm.Data["k"] != "v" {
		t.Fatalf("other object: %+v, %v", got, err)
	}
	if got, err := Transform("x"); got != "x" || err != nil {
		t.Fatalf("non-object: %v, %v", got, err)
	}
}

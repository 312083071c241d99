package agent

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/node/metrics"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/tunnel"
)

func TestWorkloadLabels(t *testing.T) {
	tbl, err := tables.New(tables.Options{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), LocalNode: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	addPod := func(ns, name, ip string, labels map[string]string) {
		tbl.OnAdd(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, UID: types.UID("u-" + name)},
			Spec:   corev1.PodSpec{NodeName: "n1", ServiceAccountName: "default"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}}, false)
	}
	addPod("shop", "web-7d9f8-abcde", "10.1.0.4", map[string]string{"pod-template-hash": "7d9f8", "app": "web", "version": "v3"})
	addPod("pay", "backend-0", "10.1.0.5", map[string]string{"controller-revision-hash": "x", "app.kubernetes.io/name": "backend",
		"service.istio.io/canonical-name": "payments", "service.istio.io/canonical-revision": "r7"})
	port, name, tcp := int32(8080), "http", corev1.ProtocolTCP
	tbl.OnAdd(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "pay", Name: "backend-1", Labels: map[string]string{discoveryv1.LabelServiceName: "backend"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &tcp}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}}},
	}, false)
	f := workloadLabels(tbl, "cluster.local")
	ci := &tunnel.ConnInfo{SourceAddr: netip.MustParseAddrPort("10.1.0.4:40000"), DestAddr: netip.MustParseAddrPort("10.1.0.5:8080"),
		Forwarded: tunnel.Forwarded{Host: "backend.pay.svc.cluster.local"}}
	want := metrics.WorkloadLabels{
		SourceWorkload: "web", SourceApp: "web", SourceNamespace: "shop", SourceCanonicalService: "web", SourceCanonicalRevision: "v3",
		DestinationWorkload: "backend", DestinationApp: "backend", DestinationNamespace: "pay",
		DestinationCanonicalService: "payments", DestinationCanonicalRevision: "r7",
		DestinationService: "backend.pay.svc.cluster.local", DestinationServiceName: "backend", DestinationServiceNamespace: "pay",
	}
	if got := f(ci); got != want {
		t.Errorf("labels\n got %+v\nwant %+v", got, want)
	}
	// A host naming a Service the destination is not behind, another
	// domain, or no Service at all is not believed.
	for _, host := range []string{"frontend.shop.svc.cluster.local", "backend.pay.svc.other.local", "backend.pay", "a.b.c.svc.cluster.local", ""} {
		ci.Forwarded.Host = host
		if got := f(ci); got.DestinationService != "" || got.DestinationServiceName != "" {
			t.Errorf("host %q: service %q/%q, want none", host, got.DestinationService, got.DestinationServiceName)
		}
	}
}

package tables

import (
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const localNode = "node-a"

var time0 time.Time

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func newTables(t testing.TB, mod func(*Options)) *Tables {
	t.Helper()
	o := Options{TrustDomain: td, LocalNode: localNode}
	if mod != nil {
		mod(&o)
	}
	tb, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func ns(name string, lbl map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl}}
}

var meshOn = map[string]string{"ambit.dev/mesh": "enabled"}

type podOpt func(*corev1.Pod)

func pod(namespace, name, node string, ips []string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID("uid-" + namespace + "-" + name),
			Labels: map[string]string{"app": name}},
		Spec:   corev1.PodSpec{NodeName: node, ServiceAccountName: "sa-" + name},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for i, ip := range ips {
		if i == 0 {
			p.Status.PodIP = ip
		}
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func withLabels(l map[string]string) podOpt {
	return func(p *corev1.Pod) {
		for k, v := range l {
			p.Labels[k] = v
		}
	}
}

func hostNet(p *corev1.Pod) { p.Spec.HostNetwork = true }

type svcOpt func(*corev1.Service)

func svc(namespace, name string, ips []string, ports []corev1.ServicePort, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIPs: ips, Ports: ports},
	}
	if len(ips) > 0 {
		s.Spec.ClusterIP = ips[0]
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func sport(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}
}

type ep struct {
	addr, node                  string
	ready, serving, terminating *bool
}

func bp(b bool) *bool { return &b }

func eslice(namespace, name, service string, v6 bool, ports map[string]int32, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	if v6 {
		s.AddressType = discoveryv1.AddressTypeIPv6
	}
	for n, p := range ports {
		tcp := corev1.ProtocolTCP
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &n, Port: &p, Protocol: &tcp})
	}
	for _, e := range eps {
		node := e.node
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.addr},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating},
			NodeName:   &node,
		})
	}
	return s
}

// recorder collects enrolment events as "Enrol ns/name".
type recorder struct{ got []string }

func (r *recorder) on(e Event) {
	r.got = append(r.got, fmt.Sprintf("%s %s/%s", e.Type, e.Workload.Namespace, e.Workload.Name))
}

func (r *recorder) take() []string { g := r.got; r.got = nil; return g }

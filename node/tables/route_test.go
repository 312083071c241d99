package tables

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// cluster builds the routing fixture shared by the table below.
func cluster(t *testing.T, mod func(*Options)) *Tables {
	tb := newTables(t, mod)
	local := corev1.ServiceInternalTrafficPolicyLocal
	prefer := corev1.ServiceTrafficDistributionPreferClose
	objs := []any{
		ns("mesh", meshOn), ns("plain", nil),
		pod("mesh", "web-1", "node-a", []string{"10.0.0.1"}),
		pod("mesh", "web-2", "node-b", []string{"10.0.1.1"}),
		pod("mesh", "web-3", "node-c", []string{"10.0.2.1"}),
		pod("mesh", "client-b", "node-b", []string{"10.0.1.9"}),
		pod("mesh", "dual", "node-b", []string{"10.0.1.5", "fd00::1:5"}),
		pod("mesh", "optout", "node-a", []string{"10.0.0.9"}, withLabels(map[string]string{"ambit.dev/mesh": "disabled"})),
		pod("plain", "db-1", "node-b", []string{"10.0.3.1"}),
		// Named target port resolved differently in two slices.
		svc("mesh", "web", []string{"10.96.0.10"}, []corev1.ServicePort{
			sport("http", 80, intstr.FromString("http")), sport("admin", 81, intstr.FromInt32(9000))}),
		eslice("mesh", "web-abc", "web", false, map[string]int32{"http": 8080, "admin": 9000},
			ep{addr: "10.0.0.1", node: "node-a"},
			ep{addr: "10.0.2.1", node: "node-c", ready: bp(false), serving: bp(false)}),
		eslice("mesh", "web-def", "web", false, map[string]int32{"http": 9090},
			ep{addr: "10.0.1.1", node: "node-b"}),
		// No endpoints at all.
		svc("mesh", "empty", []string{"10.96.0.11"}, []corev1.ServicePort{sport("", 80, intstr.FromInt32(80))}),
		// Only a terminating but still serving endpoint.
		svc("mesh", "draining", []string{"10.96.0.12"}, []corev1.ServicePort{sport("", 80, intstr.FromInt32(8080))}),
		eslice("mesh", "draining-1", "draining", false, map[string]int32{"": 8080},
			ep{addr: "10.0.2.1", node: "node-c", ready: bp(false), serving: bp(true), terminating: bp(true)}),
		// internalTrafficPolicy=Local with the only endpoint on node-b.
		svc("mesh", "local-only", []string{"10.96.0.13"}, []corev1.ServicePort{sport("", 80, intstr.FromInt32(8080))},
			func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = &local }),
		eslice("mesh", "local-only-1", "local-only", false, map[string]int32{"": 8080},
			ep{addr: "10.0.1.1", node: "node-b"}),
		// PreferClose with endpoints on node-a and node-b.
		svc("mesh", "close", []string{"10.96.0.14"}, []corev1.ServicePort{sport("", 80, intstr.FromInt32(8080))},
			func(s *corev1.Service) { s.Spec.TrafficDistribution = &prefer }),
		eslice("mesh", "close-1", "close", false, map[string]int32{"": 8080},
			ep{addr: "10.0.0.1", node: "node-a"}, ep{addr: "10.0.1.1", node: "node-b"}),
		// Dual stack.
		svc("mesh", "dual", []string{"10.96.0.15", "fd00:96::15"}, []corev1.ServicePort{sport("", 80, intstr.FromInt32(8080))}),
		eslice("mesh", "dual-v4", "dual", false, map[string]int32{"": 8080}, ep{addr: "10.0.1.5", node: "node-b"}),
		eslice("mesh", "dual-v6", "dual", true, map[string]int32{"": 8080}, ep{addr: "fd00::1:5", node: "node-b"}),
		// Headless: no cluster IP, clients dial the pod IPs.
		svc("mesh", "web-headless", []string{"None"}, []corev1.ServicePort{sport("", 80, intstr.FromInt32(8080))}),
		eslice("mesh", "web-headless-1", "web-headless", false, map[string]int32{"": 8080}, ep{addr: "10.0.0.1", node: "node-a"}),
		// Not enrolled backend; and an endpoint that is no pod.
		svc("plain", "db", []string{"10.96.0.16"}, []corev1.ServicePort{sport("", 5432, intstr.FromInt32(5432))}),
		eslice("plain", "db-1", "db", false, map[string]int32{"": 5432}, ep{addr: "10.0.3.1", node: "node-b"}),
		svc("plain", "external", []string{"10.96.0.17"}, []corev1.ServicePort{sport("", 443, intstr.FromInt32(443))}),
		eslice("plain", "external-1", "external", false, map[string]int32{"": 443}, ep{addr: "192.0.2.7", node: ""}),
	}
	for _, o := range objs {
		tb.OnAdd(o, true)
	}
	return tb
}

func TestResolve(t *testing.T) {
	ap := netip.MustParseAddrPort
	id := func(ns, sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }
	cases := []struct {
		name      string
		mod       func(*Options)
		dst       string
		src       string // "" = unknown source (local node)
		kind      Kind
		endpoints []string // every endpoint seen over several calls
		identity  []string // per endpoint, "" for none
		service   string
		reason    string
	}{
		{name: "named port over two slices, not-ready skipped", dst: "10.96.0.10:80",
			kind: HBONE, endpoints: []string{"10.0.0.1:8080", "10.0.1.1:9090"},
			identity: []string{id("mesh", "sa-web-1"), id("mesh", "sa-web-2")}, service: "mesh/web", reason: ReasonEnrolled},
		{name: "numeric target port only in one slice", dst: "10.96.0.10:81",
			kind: HBONE, endpoints: []string{"10.0.0.1:9000"}, identity: []string{id("mesh", "sa-web-1")}, service: "mesh/web", reason: ReasonEnrolled},
		{name: "unknown service port", dst: "10.96.0.10:82", kind: Deny, service: "mesh/web", reason: ReasonNoServicePort},
		{name: "no endpoints", dst: "10.96.0.11:80", kind: Deny, service: "mesh/empty", reason: ReasonNoReadyEndpoint},
		{name: "terminating but serving used when nothing is ready", dst: "10.96.0.12:80",
			kind: HBONE, endpoints: []string{"10.0.2.1:8080"}, identity: []string{id("mesh", "sa-web-3")}, service: "mesh/draining", reason: ReasonEnrolled},
		{name: "internalTrafficPolicy Local, none on this node", dst: "10.96.0.13:80",
			kind: Deny, service: "mesh/local-only", reason: ReasonNoLocalEndpoint},
		{name: "internalTrafficPolicy Local, source on the endpoint's node", dst: "10.96.0.13:80", src: "10.0.1.9",
			kind: HBONE, endpoints: []string{"10.0.1.1:8080"}, identity: []string{id("mesh", "sa-web-2")}, service: "mesh/local-only", reason: ReasonEnrolled},
		{name: "PreferClose picks the local endpoint", dst: "10.96.0.14:80",
			kind: HBONE, endpoints: []string{"10.0.0.1:8080"}, identity: []string{id("mesh", "sa-web-1")}, service: "mesh/close", reason: ReasonEnrolled},
		{name: "PreferClose from node-b", dst: "10.96.0.14:80", src: "10.0.1.9",
			kind: HBONE, endpoints: []string{"10.0.1.1:8080"}, identity: []string{id("mesh", "sa-web-2")}, service: "mesh/close", reason: ReasonEnrolled},
		{name: "IPv4 VIP of dual-stack service", dst: "10.96.0.15:80",
			kind: HBONE, endpoints: []string{"10.0.1.5:8080"}, identity: []string{id("mesh", "sa-dual")}, service: "mesh/dual", reason: ReasonEnrolled},
		{name: "IPv6 VIP of dual-stack service", dst: "[fd00:96::15]:80",
			kind: HBONE, endpoints: []string{"[fd00::1:5]:8080"}, identity: []string{id("mesh", "sa-dual")}, service: "mesh/dual", reason: ReasonEnrolled},
		{name: "IPv4-mapped IPv6 VIP", dst: "[::ffff:10.96.0.15]:80",
			kind: HBONE, endpoints: []string{"10.0.1.5:8080"}, identity: []string{id("mesh", "sa-dual")}, service: "mesh/dual", reason: ReasonEnrolled},
		{name: "pod IP direct (headless)", dst: "10.0.0.1:8080",
			kind: HBONE, endpoints: []string{"10.0.0.1:8080"}, identity: []string{id("mesh", "sa-web-1")}, reason: ReasonEnrolled},
		{name: "pod IPv6 direct", dst: "[fd00::1:5]:7000",
			kind: HBONE, endpoints: []string{"[fd00::1:5]:7000"}, identity: []string{id("mesh", "sa-dual")}, reason: ReasonEnrolled},
		{name: "opted-out pod", dst: "10.0.0.9:80", kind: Passthrough, endpoints: []string{"10.0.0.9:80"}, identity: []string{""}, reason: ReasonNotEnrolled},
		{name: "service backed by unenrolled pod", dst: "10.96.0.16:5432",
			kind: Passthrough, endpoints: []string{"10.0.3.1:5432"}, identity: []string{""}, service: "plain/db", reason: ReasonNotEnrolled},
		{name: "endpoint that is no pod", dst: "10.96.0.17:443",
			kind: Passthrough, endpoints: []string{"192.0.2.7:443"}, identity: []string{""}, service: "plain/external", reason: ReasonNotPod},
		{name: "unknown outside the cluster", dst: "203.0.113.5:443",
			kind: Passthrough, endpoints: []string{"203.0.113.5:443"}, identity: []string{""}, reason: ReasonOutsideCluster},
		{name: "unknown outside the cluster, denied", dst: "203.0.113.5:443",
			mod:  func(o *Options) { o.DenyUnknown = true },
			kind: Deny, endpoints: []string{"203.0.113.5:443"}, identity: []string{""}, reason: ReasonUnknownDenied},
		{name: "unknown inside the cluster ranges passes even with DenyUnknown", dst: "10.0.9.9:80",
			mod: func(o *Options) {
				o.DenyUnknown = true
				o.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}
			},
			kind: Passthrough, endpoints: []string{"10.0.9.9:80"}, identity: []string{""}, reason: ReasonUnknownInCluster},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := cluster(t, c.mod)
			var src netip.Addr
			if c.src != "" {
				src = netip.MustParseAddr(c.src)
			}
			seen := map[string]string{}
			for range 8 {
				r := tb.Resolve(ap(c.dst), src)
				if r.Kind != c.kind || r.Reason != c.reason || r.Service.String() != c.service {
					t.Fatalf("Resolve(%s) = %+v, want kind %v reason %q service %q", c.dst, r, c.kind, c.reason, c.service)
				}
				if r.Kind == HBONE {
					if want := netip.AddrPortFrom(r.Endpoint.Addr(), HBONEPort); r.Tunnel != want {
						t.Fatalf("tunnel %v, want %v", r.Tunnel, want)
					}
				} else if r.Tunnel.IsValid() {
					t.Fatalf("non-HBONE route has a tunnel: %+v", r)
				}
				if r.Kind == Deny && r.Endpoint.IsValid() != (len(c.endpoints) > 0) {
					t.Fatalf("deny endpoint %v", r.Endpoint)
				}
				if r.Endpoint.IsValid() {
					idStr := ""
					if !r.Identity.IsZero() {
						idStr = r.Identity.String()
					}
					seen[r.Endpoint.String()] = idStr
				}
			}
			var got []string
			for k := range seen {
				got = append(got, k)
			}
			slices.Sort(got)
			want := slices.Clone(c.endpoints)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("endpoints %v, want %v", got, want)
			}
			for i, e := range c.endpoints {
				if seen[e] != c.identity[i] {
					t.Errorf("identity for %s = %q, want %q", e, seen[e], c.identity[i])
				}
			}
		})
	}
}

func TestResolveRoundRobin(t *testing.T) {
	tb := cluster(t, nil)
	count := map[netip.AddrPort]int{}
	for range 10 {
		count[tb.Resolve(netip.MustParseAddrPort("10.96.0.10:80"), netip.Addr{}).Endpoint]++
	}
	if len(count) != 2 || count[netip.MustParseAddrPort("10.0.0.1:8080")] != 5 || count[netip.MustParseAddrPort("10.0.1.1:9090")] != 5 {
		t.Fatalf("10 connections over 2 endpoints: %v, want 5 each", count)
	}
}

func TestResolveFollowsUpdates(t *testing.T) {
	tb := cluster(t, nil)
	dst := netip.MustParseAddrPort("10.96.0.14:80")
	// The local endpoint stops being ready: PreferClose falls back to node-b.
	tb.OnUpdate(nil, eslice("mesh", "close-1", "close", false, map[string]int32{"": 8080},
		ep{addr: "10.0.0.1", node: "node-a", ready: bp(false), serving: bp(false)}, ep{addr: "10.0.1.1", node: "node-b"}))
	if r := tb.Resolve(dst, netip.Addr{}); r.Endpoint != netip.MustParseAddrPort("10.0.1.1:8080") {
		t.Fatalf("after local endpoint not ready: %+v", r)
	}
	// The slice goes away: deny.
	tb.OnDelete(eslice("mesh", "close-1", "close", false, nil))
	if r := tb.Resolve(dst, netip.Addr{}); r.Kind != Deny || r.Reason != ReasonNoReadyEndpoint {
		t.Fatalf("after slice delete: %+v", r)
	}
	// The service goes away: the VIP is unknown.
	tb.OnDelete(svc("mesh", "close", []string{"10.96.0.14"}, nil))
	if r := tb.Resolve(dst, netip.Addr{}); r.Kind != Passthrough || r.Reason != ReasonOutsideCluster {
		t.Fatalf("after service delete: %+v", r)
	}
	// The service's namespace is unlabelled: its pods pass through.
	tb.OnUpdate(nil, ns("mesh", nil))
	if r := tb.Resolve(netip.MustParseAddrPort("10.96.0.10:80"), netip.Addr{}); r.Kind != Passthrough || r.Reason != ReasonNotEnrolled {
		t.Fatalf("after namespace unlabel: %+v", r)
	}
}

package authz

import (
	"fmt"
	"testing"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"k8s.io/apimachinery/pkg/types"
)

// mixedPolicies returns n policies that all apply to pod foo/web-1 (half of
// them namespace-wide, half by selector, a tenth from the root namespace),
// with the rule shapes real meshes use: exact principals with ports,
// namespaces, service accounts, DENY by namespace, port-only rules, and a
// tenth that no exact key describes (IP blocks) and that every decision
// scans.
func mixedPolicies(n int) []*v1alpha1.AuthorizationPolicy {
	out := make([]*v1alpha1.AuthorizationPolicy, 0, n)
	for i := range n {
		ns := "foo"
		if i%10 == 3 {
			ns = rootNS
		}
		var p *v1alpha1.AuthorizationPolicy
		name := fmt.Sprintf("%s/p%04d", ns, i)
		switch i % 10 {
		case 0, 1, 2, 3:
			p = allow(name, and(src(v1alpha1.Source{Principals: ss(fmt.Sprintf("cluster.local/ns/ns%d/sa/sa%d", i, i))}), op(v1alpha1.Operation{Ports: ss("8080", "8443")})))
		case 4, 5:
			p = allow(name, src(v1alpha1.Source{Namespaces: ss(fmt.Sprintf("ns%d", i))}))
		case 6:
			p = allow(name, src(v1alpha1.Source{ServiceAccounts: ss(fmt.Sprintf("ns%d/sa%d", i, i))}))
		case 7:
			p = deny(name, src(v1alpha1.Source{Namespaces: ss(fmt.Sprintf("bad%d", i))}))
		case 8:
			p = allow(name, op(v1alpha1.Operation{Ports: ss(fmt.Sprint(10000 + i))}))
		case 9:
			p = allow(name, src(v1alpha1.Source{IPBlocks: ss(fmt.Sprintf("172.%d.%d.0/24", 16+i/256, i%256))}))
		}
		if i%2 == 1 {
			p.Spec.Selector = &v1alpha1.WorkloadSelector{MatchLabels: sel("app", "web")}
		}
		out = append(out, p)
	}
	return out
}

// ipPolicies: n ALLOW policies that only IP blocks describe.
func ipPolicies(n int) []*v1alpha1.AuthorizationPolicy {
	out := make([]*v1alpha1.AuthorizationPolicy, 0, n)
	for i := range n {
		out = append(out, allow(fmt.Sprintf("foo/ip%04d", i),
			src(v1alpha1.Source{IPBlocks: ss(fmt.Sprintf("172.%d.%d.0/24", 16+i/256, i%256))})))
	}
	return out
}

// prefixPolicies: n ALLOW policies on principal prefixes.
func prefixPolicies(n int) []*v1alpha1.AuthorizationPolicy {
	out := make([]*v1alpha1.AuthorizationPolicy, 0, n)
	for i := range n {
		out = append(out, allow(fmt.Sprintf("foo/prefix%04d", i),
			src(v1alpha1.Source{Principals: ss(fmt.Sprintf("cluster.local/ns/ns%d/*", i))})))
	}
	return out
}

// unindexedPolicies: n ALLOW policies whose only constraint is a
// destination.ip condition, which no index family covers: the worst case,
// every decision scans them all.
func unindexedPolicies(n int) []*v1alpha1.AuthorizationPolicy {
	out := make([]*v1alpha1.AuthorizationPolicy, 0, n)
	for i := range n {
		out = append(out, allow(fmt.Sprintf("foo/when%04d", i),
			when(v1alpha1.Condition{Key: "destination.ip", Values: ss(fmt.Sprintf("172.%d.%d.0/24", 16+i/256, i%256))})))
	}
	return out
}

func TestBenchmarkFixturesApply(t *testing.T) {
	// The benchmarks below are only meaningful if their policies apply and
	// decide as intended.
	e := newEngine(t)
	e.Update(mixedPolicies(1000), nil)
	r := request()
	v := e.snap.Load().view(&r.Workload)
	if got := v.allow.policies + v.deny.policies; got != 1000 {
		t.Fatalf("%d of 1000 policies apply to the workload", got)
	}
	if d := e.Decide(request(mtlsFrom("cluster.local/ns/ns990/sa/sa990"))); !d.Allow || d.Policy != "foo/p0990" {
		t.Fatalf("allowed request: %v", d)
	}
	if d := e.Decide(request(mtlsFrom(devWeb), port(9999))); d.Allow || d.Reason != ReasonNoAllowMatch {
		t.Fatalf("denied request: %v", d)
	}
	if d := e.Decide(request(mtlsFrom("cluster.local/ns/bad997/sa/x"))); d.Allow || d.Policy != "foo/p0997" {
		t.Fatalf("DENY request: %v", d)
	}
	e.Update(ipPolicies(1000), nil)
	if d := e.Decide(request(plaintext(), srcIP("172.19.231.9"))); !d.Allow || d.Policy != "foo/ip0999" {
		t.Fatalf("last IP block: %v", d)
	}
	e.Update(prefixPolicies(1000), nil)
	if d := e.Decide(request(mtlsFrom("cluster.local/ns/ns999/sa/x"))); !d.Allow || d.Policy != "foo/prefix0999" {
		t.Fatalf("last prefix: %v", d)
	}
	e.Update(unindexedPolicies(1000), nil)
	v = e.snap.Load().view(&r.Workload)
	if len(v.allow.rest) != 1000 {
		t.Fatalf("%d rules in the scanned rest, want 1000", len(v.allow.rest))
	}
	if d := e.Decide(request(plaintext(), dstIP("172.19.231.9"))); !d.Allow || d.Policy != "foo/when0999" {
		t.Fatalf("last when: %v", d)
	}
}

// BenchmarkDecide: one decision with 1,000 policies applying to the
// destination workload. Target <= 2 us. Run:
//
//	go test -run '^$' -bench 'Decide|Update' -benchmem ./node/authz/
func BenchmarkDecide(b *testing.B) {
	run := func(name string, policies []*v1alpha1.AuthorizationPolicy, pas []*v1alpha1.PeerAuthentication, req Request) {
		b.Run(name, func(b *testing.B) {
			e := newEngine(b)
			e.Update(policies, pas)
			e.Decide(req) // build the cached view
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				e.Decide(req)
			}
		})
	}
	mixed := mixedPolicies(1000)
	strict := []*v1alpha1.PeerAuthentication{pa(rootNS+"/default", v1alpha1.MTLSStrict), pa("foo/web", v1alpha1.MTLSUnset, paSelector("app", "web"), paPorts("9090", "PERMISSIVE"))}
	run("mixed-1000/allowed-by-principal", mixed, strict, request(mtlsFrom("cluster.local/ns/ns990/sa/sa990")))
	run("mixed-1000/allowed-by-namespace", mixed, strict, request(mtlsFrom("cluster.local/ns/ns994/sa/any")))
	run("mixed-1000/denied-no-match", mixed, strict, request(mtlsFrom(devWeb), port(9999)))
	run("mixed-1000/denied-by-DENY", mixed, strict, request(mtlsFrom("cluster.local/ns/bad997/sa/x")))
	run("mixed-1000/strict-plaintext", mixed, strict, request(plaintext()))
	run("ipblocks-1000/denied-no-match", ipPolicies(1000), nil, request(plaintext(), srcIP("10.9.9.9")))
	run("principal-prefix-1000/denied-no-match", prefixPolicies(1000), nil, request(mtlsFrom(devWeb)))
	run("unindexed-1000/worst-case-scan", unindexedPolicies(1000), nil, request(mtlsFrom(devWeb)))
}

// BenchmarkBuildView: what the first decision for a workload (label set)
// after an Update pays on top of Decide.
func BenchmarkBuildView(b *testing.B) {
	e := newEngine(b)
	e.Update(mixedPolicies(1000), nil)
	s := e.snap.Load()
	w := request().Workload
	b.ReportAllocs()
	for b.Loop() {
		s.buildView(&w)
	}
}

func BenchmarkDecideParallel(b *testing.B) {
	e := newEngine(b)
	e.Update(mixedPolicies(1000), nil)
	req := request(mtlsFrom("cluster.local/ns/ns990/sa/sa990"))
	e.Decide(req)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e.Decide(req)
		}
	})
}

// BenchmarkUpdate: installing 1,000 AuthorizationPolicies and 100
// PeerAuthentications, all new ("all-changed") or with one policy changed
// since the previous Update ("one-changed", the informer case: unchanged
// objects keep their UID and resourceVersion and are not recompiled).
func BenchmarkUpdate(b *testing.B) {
	var pas []*v1alpha1.PeerAuthentication
	for i := range 100 {
		pas = append(pas, pa(fmt.Sprintf("ns%d/default", i), v1alpha1.MTLSStrict))
	}
	b.Run("all-changed", func(b *testing.B) {
		aps := mixedPolicies(1000)
		e := newEngine(b)
		b.ReportAllocs()
		for b.Loop() {
			e.Update(aps, pas)
		}
	})
	b.Run("one-changed", func(b *testing.B) {
		aps := mixedPolicies(1000)
		for i, p := range aps {
			p.UID, p.ResourceVersion = types.UID(fmt.Sprint("uid-", i)), "1"
		}
		e := newEngine(b)
		e.Update(aps, pas)
		b.ReportAllocs()
		n := 1
		for b.Loop() {
			n++
			aps[n%len(aps)].ResourceVersion = fmt.Sprint(n)
			e.Update(aps, pas)
		}
	})
}

// BenchmarkLiveRecheck: re-deciding 10,000 open connections to 100
// workloads after an Update of 1,000 policies (views rebuilt on the way):
// the "closed within a second" budget.
func BenchmarkLiveRecheck(b *testing.B) {
	e := newEngine(b)
	aps := mixedPolicies(1000)
	live := NewLive()
	for i := range 10000 {
		j := (i%100)*10 + i%7 // a principal some ALLOW policy admits
		req := request(mtlsFrom(fmt.Sprintf("cluster.local/ns/ns%d/sa/sa%d", j, j)),
			pod("foo", fmt.Sprintf("web-%d", i%100), "app", "web", "pod", fmt.Sprint(i%100)))
		live.Register(req, func(Decision) { b.Fatal("allowed connection closed") })
	}
	b.ReportAllocs()
	for b.Loop() {
		e.Update(aps, nil) // new snapshot: every view is rebuilt
		live.Recheck(e)
	}
	if live.Len() != 10000 {
		b.Fatalf("%d connections left", live.Len())
	}
}

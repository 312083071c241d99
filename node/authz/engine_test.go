package authz

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNewNeedsRootNamespace(t *testing.T) {
	if _, err := New(Options{}); !errors.Is(err, ErrNoRootNamespace) {
		t.Fatalf("New without root namespace: %v", err)
	}
}

func TestUpdateSwapsAndCountsGenerations(t *testing.T) {
	e := newEngine(t)
	g0 := e.Generation()
	req := request(mtlsFrom(prodWeb))
	if d := e.Decide(req); !d.Allow {
		t.Fatalf("empty engine: %v", d)
	}
	e.Update([]*v1alpha1.AuthorizationPolicy{deny("foo/d", src(v1alpha1.Source{Principals: ss(prodWeb)}))}, nil)
	if e.Generation() != g0+1 {
		t.Fatalf("generation %d after one update from %d", e.Generation(), g0)
	}
	// The cached view of the old snapshot must not leak into the new one.
	if d := e.Recheck(req); d.Allow || d.Policy != "foo/d" {
		t.Fatalf("after DENY update: %v", d)
	}
	e.Update(nil, nil)
	if d := e.Recheck(req); !d.Allow {
		t.Fatalf("after removing the policy: %v", d)
	}
}

func TestRelabelledPodGetsFreshView(t *testing.T) {
	e := newEngine(t)
	e.Update([]*v1alpha1.AuthorizationPolicy{ap("foo/lock-db", withSelector("app", "db"))}, nil)
	req := request(mtlsFrom(prodWeb))
	if d := e.Decide(req); !d.Allow {
		t.Fatalf("web pod: %v", d)
	}
	req.Workload.Labels = sel("app", "db")
	if d := e.Decide(req); d.Allow {
		t.Fatalf("same pod relabelled app=db must be locked: %v", d)
	}
	req.Workload.Labels = sel("app", "web")
	if d := e.Decide(req); !d.Allow {
		t.Fatalf("relabelled back: %v", d)
	}
}

func TestViewCacheIsBounded(t *testing.T) {
	e, err := New(Options{RootNamespace: rootNS, MaxCachedWorkloads: 3})
	if err != nil {
		t.Fatal(err)
	}
	e.Update([]*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss(prodWeb)}))}, nil)
	for i := range 10 {
		req := request(mtlsFrom(prodWeb), pod("foo", fmt.Sprintf("web-%d", i)))
		if d := e.Decide(req); !d.Allow {
			t.Fatalf("pod %d: %v", i, d)
		}
	}
	if n := e.snap.Load().nviews.Load(); n != 3 {
		t.Fatalf("%d cached views, want the bound 3", n)
	}
}

func TestUpdateReports(t *testing.T) {
	e := newEngine(t)
	aps := []*v1alpha1.AuthorizationPolicy{
		allow("foo/l7", and(src(v1alpha1.Source{Principals: ss(prodWeb)}), op(v1alpha1.Operation{Methods: ss("GET")}))),
		deny("foo/l7deny", and(op(v1alpha1.Operation{Ports: ss("8080"), Paths: ss("/x")}), when(v1alpha1.Condition{Key: "request.headers[a]", Values: ss("b")}))),
		allow("foo/clean", src(v1alpha1.Source{Namespaces: ss("prod")})),
		ap("foo/ext", withAction("CUSTOM")),
		ap("foo/gw", func(p *v1alpha1.AuthorizationPolicy) {
			p.Spec.TargetRef = &v1alpha1.PolicyTargetReference{Kind: "Gateway", Name: "g"}
		}),
		allow("foo/spiffe", src(v1alpha1.Source{Principals: ss("spiffe://" + prodWeb)})),
		allow("foo/clean", v1alpha1.Rule{}), // duplicate key
		nil,
	}
	pas := []*v1alpha1.PeerAuthentication{
		pa("foo/new", v1alpha1.MTLSStrict, paCreated(9)),
		pa("foo/old", v1alpha1.MTLSPermissive, paCreated(1)),
		pa("foo/mid", v1alpha1.MTLSPermissive, paCreated(5)),
		pa("foo/ports", v1alpha1.MTLSStrict, paPorts("8080", "DISABLE"), paCreated(20)),
		pa("foo/badport", v1alpha1.MTLSStrict, paSelector("app", "web"), paPorts("http", "DISABLE", "0", "STRICT", "70000", "STRICT")),
		nil,
	}
	reps := e.Update(aps, pas)
	if len(reps) != len(aps)-1+len(pas)-1 {
		t.Fatalf("%d reports", len(reps))
	}
	byKey := map[string]PolicyReport{}
	for _, r := range reps {
		if _, dup := byKey[r.Key()]; !dup {
			byKey[r.Key()] = r
		}
	}
	check := func(key string, accepted bool, reason string, issueHas ...string) {
		t.Helper()
		r, ok := byKey[key]
		if !ok {
			t.Fatalf("no report for %s", key)
		}
		if r.Accepted != accepted || r.Reason != reason {
			t.Errorf("%s: accepted=%v reason=%q (%s), want %v %q", key, r.Accepted, r.Reason, r.Message, accepted, reason)
		}
		all := strings.Join(append(r.Issues, r.Warnings...), "\n")
		for _, s := range issueHas {
			if !strings.Contains(all, s) {
				t.Errorf("%s: issues %q lack %q", key, all, s)
			}
		}
		if len(issueHas) == 0 && all != "" {
			t.Errorf("%s: unexpected issues %q", key, all)
		}
	}
	check("foo/l7", true, ReasonAccepted, "rules[0]: rule dropped", "rules[0].to[0].operation.methods: L7 field")
	check("foo/l7deny", true, ReasonAccepted, "rules[0]: enforced without", "operation.paths", `condition key "request.headers[a]"`)
	check("foo/clean", true, ReasonAccepted)
	check("foo/ext", false, ReasonUnsupportedAction)
	check("foo/gw", false, ReasonTargetRefUnsupported)
	check("foo/spiffe", true, ReasonAccepted, "never matches")
	check("foo/old", true, ReasonAccepted)
	check("foo/new", false, ReasonSuperseded)
	check("foo/mid", false, ReasonSuperseded)
	check("foo/ports", false, ReasonSuperseded, "portLevelMtls ignored")
	check("foo/badport", true, ReasonAccepted, `portLevelMtls["http"]`, `portLevelMtls["0"]`, `portLevelMtls["70000"]`)
	if !strings.Contains(byKey["foo/new"].Message, "foo/old") {
		t.Errorf("superseded message %q does not name the winner", byKey["foo/new"].Message)
	}
	dup := reps[6]
	if dup.Key() != "foo/clean" || dup.Accepted {
		t.Errorf("duplicate key report %+v", dup)
	}
	st := e.Stats()
	if st.Updates != 1 || st.Policies != uint64(len(reps)) || st.NilPoliciesSkipped != 2 || st.PartiallyEnforced != 4 {
		t.Errorf("stats %+v", st)
	}

	now := metav1.NewTime(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	conds := byKey["foo/l7"].Conditions(now)
	if len(conds) != 2 || conds[0].Type != v1alpha1.ConditionAccepted || conds[0].Status != metav1.ConditionTrue ||
		conds[1].Type != v1alpha1.ConditionPartiallyEnforced || conds[1].Status != metav1.ConditionTrue ||
		conds[1].Reason != ReasonPartiallyEnforced || !strings.Contains(conds[1].Message, "methods") ||
		!conds[0].LastTransitionTime.Equal(&now) || conds[0].ObservedGeneration != 1 {
		t.Errorf("conditions %+v", conds)
	}
	conds = byKey["foo/gw"].Conditions(now)
	if conds[0].Status != metav1.ConditionFalse || conds[0].Reason != ReasonTargetRefUnsupported || conds[1].Status != metav1.ConditionFalse {
		t.Errorf("targetRef conditions %+v", conds)
	}
}

// Decide runs concurrently with Update; run with -race.
func TestConcurrentDecideAndUpdate(t *testing.T) {
	e := newEngine(t)
	denyAll := []*v1alpha1.AuthorizationPolicy{deny("foo/d", v1alpha1.Rule{})}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := request(mtlsFrom(prodWeb), pod("foo", fmt.Sprintf("web-%d", w)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := e.Decide(req)
				// Only two policy sets are ever installed: the decision
				// must be one of theirs, never a mix.
				if !(d.Allow && d.Reason == ReasonNoAllowPolicy) && !(!d.Allow && d.Policy == "foo/d") {
					t.Errorf("torn decision %v", d)
					return
				}
			}
		}()
	}
	for i := range 2000 {
		if i%2 == 0 {
			e.Update(denyAll, nil)
		} else {
			e.Update(nil, nil)
		}
	}
	close(stop)
	wg.Wait()
}

func TestUpdateReusesUnchangedPolicies(t *testing.T) {
	e := newEngine(t)
	p := allow("foo/p", and(src(v1alpha1.Source{Principals: ss(prodWeb)}), op(v1alpha1.Operation{Methods: ss("GET")})))
	p.UID, p.ResourceVersion = "uid-1", "10"
	first := e.Update([]*v1alpha1.AuthorizationPolicy{p}, nil)
	cp := e.snap.Load().byNS["foo"].all[0]
	first[0].Issues[0] = "mutated by the caller"

	again := e.Update([]*v1alpha1.AuthorizationPolicy{p}, nil)
	if e.snap.Load().byNS["foo"].all[0] != cp {
		t.Fatal("unchanged policy was recompiled")
	}
	if len(again[0].Issues) != 1 || !strings.Contains(again[0].Issues[0], "rule dropped") {
		t.Fatalf("cached report %+v (a caller's mutation must not reach the cache)", again[0])
	}

	// A new resourceVersion (or a new object under the same name) is
	// compiled afresh and takes effect.
	q := allow("foo/p", src(v1alpha1.Source{Principals: ss(prodWeb)}))
	q.UID, q.ResourceVersion = "uid-1", "11"
	e.Update([]*v1alpha1.AuthorizationPolicy{q}, nil)
	if e.snap.Load().byNS["foo"].all[0] == cp {
		t.Fatal("changed policy was not recompiled")
	}
	if d := e.Decide(request(mtlsFrom(prodWeb))); !d.Allow {
		t.Fatalf("after the change: %v", d)
	}
	r := allow("foo/p")
	r.UID, r.ResourceVersion = "uid-2", "11"
	e.Update([]*v1alpha1.AuthorizationPolicy{r}, nil)
	if d := e.Decide(request(mtlsFrom(prodWeb))); d.Allow {
		t.Fatalf("recreated object with the same resourceVersion but a new UID was not recompiled: %v", d)
	}
}

func TestDecideWithoutNamespaceFailsClosed(t *testing.T) {
	e := newEngine(t)
	req := request(mtlsFrom(prodWeb))
	req.Workload.Namespace = ""
	if d := e.Decide(req); d.Allow || d.Reason != ReasonBadRequest {
		t.Fatalf("decision %v", d)
	}
	if e.Stats().BadRequests != 1 {
		t.Fatalf("stats %+v", e.Stats())
	}
}

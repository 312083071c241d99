package policies

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// fakeDiscovery serves the listed resources per group/version; other
// group/versions are NotFound, or fail with err.
type fakeDiscovery struct {
	served map[string][]string
	err    error
	calls  []string
}

func (f *fakeDiscovery) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	f.calls = append(f.calls, gv)
	if f.err != nil {
		return nil, f.err
	}
	names, ok := f.served[gv]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{}, gv)
	}
	l := &metav1.APIResourceList{GroupVersion: gv}
	for _, n := range names {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: n}, metav1.APIResource{Name: n + "/status"})
	}
	return l, nil
}

func TestDiscoverIstio(t *testing.T) {
	for _, tc := range []struct {
		name   string
		served map[string][]string
		want   map[string]string // resource -> version
	}{
		{name: "not installed", served: nil, want: map[string]string{}},
		{name: "v1 preferred", served: map[string][]string{
			"security.istio.io/v1":      {"authorizationpolicies", "peerauthentications", "requestauthentications"},
			"security.istio.io/v1beta1": {"authorizationpolicies", "peerauthentications"},
		}, want: map[string]string{"authorizationpolicies": "v1", "peerauthentications": "v1"}},
		{name: "only v1beta1", served: map[string][]string{
			"security.istio.io/v1beta1": {"authorizationpolicies", "peerauthentications"},
		}, want: map[string]string{"authorizationpolicies": "v1beta1", "peerauthentications": "v1beta1"}},
		{name: "per resource", served: map[string][]string{
			"security.istio.io/v1":      {"authorizationpolicies"},
			"security.istio.io/v1beta1": {"peerauthentications"},
		}, want: map[string]string{"authorizationpolicies": "v1", "peerauthentications": "v1beta1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := discoverIstio(&fakeDiscovery{served: tc.served})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for r, v := range tc.want {
				if g := got[r]; g.Version != v || g.Group != IstioGroup || g.Resource != r {
					t.Fatalf("%s: got %v, want version %s", r, g, v)
				}
			}
		})
	}
	if _, err := discoverIstio(&fakeDiscovery{err: errors.New("connection refused")}); err == nil {
		t.Fatal("a discovery failure was taken for 'not installed'")
	}
}

func TestNewValidates(t *testing.T) {
	f := newFixture(t, false)
	for name, cfg := range map[string]Config{
		"no dynamic":          {Engine: f.engine},
		"no engine":           {Dynamic: noDynamic{}},
		"istio, no discovery": {Dynamic: noDynamic{}, Engine: f.engine, Istio: true},
		"negative debounce":   {Dynamic: noDynamic{}, Engine: f.engine, Debounce: -1},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: err %v, want ErrBadConfig", name, err)
		}
	}
}

func TestStatusOnly(t *testing.T) {
	a := obj(t, allowClient)
	withStatus := a.DeepCopy()
	withStatus.Object["status"] = map[string]any{"observedGeneration": int64(1)}
	withStatus.SetResourceVersion("2")
	if !statusOnly(a, withStatus) {
		t.Fatal("status change not status-only")
	}
	spec := a.DeepCopy()
	spec.SetGeneration(2)
	if statusOnly(a, spec) {
		t.Fatal("generation change taken for status-only")
	}
	recreated := a.DeepCopy()
	recreated.SetUID("other")
	if statusOnly(a, recreated) {
		t.Fatal("recreated object taken for status-only")
	}
	// Without generations the specs are compared.
	a.SetGeneration(0)
	b := a.DeepCopy()
	if !statusOnly(a, b) {
		t.Fatal("same spec, no generation: not status-only")
	}
	b.Object["spec"] = map[string]any{"action": "DENY"}
	if statusOnly(a, b) {
		t.Fatal("spec change without generation taken for status-only")
	}
	if statusOnly("x", b) {
		t.Fatal("non-object taken for status-only")
	}
}

// TestIstioLoopGatesFirstApply: with the switch on, the first apply waits
// for a successful discovery (a failure keeps it waiting, listed in
// Pending and Status.Istio.LastError). The Istio informers found by
// discovery must also sync first: TestApplyWaitsForSync and the e2e test.
func TestIstioLoopGatesFirstApply(t *testing.T) {
	f := newFixture(t, false)
	d := &fakeDiscovery{err: errors.New("connection refused")}
	f.w.cfg.Istio, f.w.cfg.Discovery = true, d
	f.w.apply()
	st := f.w.Status()
	if f.w.Synced() || len(st.Pending) != 1 || st.Pending[0] != PendingIstioDiscovery {
		t.Fatalf("before discovery: synced %v, pending %v", f.w.Synced(), st.Pending)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	// One pass of the loop with a failing discovery: still waiting.
	f.w.cfg.IstioRecheck = time.Hour
	done := make(chan struct{})
	go func() { f.w.istioLoop(ctx, &wg); close(done) }()
	waitFor(t, func() bool { return f.w.Status().Istio.LastError != "" })
	f.w.apply()
	if f.w.Synced() {
		t.Fatal("applied although Istio discovery never succeeded")
	}
	cancel()
	<-done

	// Discovery succeeds, Istio not installed: the first apply may run.
	d.err = nil
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	done = make(chan struct{})
	go func() { f.w.istioLoop(ctx2, &wg); close(done) }()
	waitFor(t, func() bool { return len(f.w.Status().Pending) == 0 })
	f.w.apply()
	if !f.w.Synced() {
		t.Fatal("not synced after a successful discovery")
	}
	cancel2()
	<-done
	wg.Wait()
	if len(d.calls) != 3 { // v1 (failed), then v1 and v1beta1
		t.Fatalf("discovery calls %v", d.calls)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

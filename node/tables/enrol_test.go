package tables

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

func TestEnrolment(t *testing.T) {
	self, err := labels.Parse("app=ambit")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		ns       map[string]string
		pod      *corev1.Pod
		enrolled bool
		eligible bool
	}{
		{"labelled namespace", meshOn, pod("a", "p", localNode, []string{"10.0.0.1"}), true, true},
		{"unlabelled namespace", nil, pod("a", "p", localNode, []string{"10.0.0.1"}), false, true},
		{"other label value", map[string]string{"ambit.dev/mesh": "disabled"}, pod("a", "p", localNode, []string{"10.0.0.1"}), false, true},
		{"pod opts out", meshOn, pod("a", "p", localNode, []string{"10.0.0.1"}, withLabels(map[string]string{"ambit.dev/mesh": "disabled"})), false, false},
		{"hostNetwork", meshOn, pod("a", "p", localNode, []string{"192.168.1.10"}, hostNet), false, false},
		{"ambit itself", meshOn, pod("a", "ambit-x", localNode, []string{"10.0.0.1"}, withLabels(map[string]string{"app": "ambit"})), false, false},
		{"ambit's label in another namespace", meshOn, pod("b", "p", localNode, []string{"10.0.0.1"}, withLabels(map[string]string{"app": "ambit"})), true, true},
		{"no IP yet", meshOn, pod("a", "p", localNode, nil), false, true},
		{"finished", meshOn, pod("a", "p", localNode, []string{"10.0.0.1"}, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), false, true},
		{"terminating", meshOn, pod("a", "p", localNode, []string{"10.0.0.1"}, func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }), true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var rec recorder
			tb := newTables(t, func(o *Options) {
				o.OnEnrolment = rec.on
				o.SelfNamespace, o.SelfSelector = "a", self
			})
			tb.OnAdd(ns(c.pod.Namespace, c.ns), true)
			tb.OnAdd(c.pod, true)
			w, ok := tb.Pod(c.pod.Namespace, c.pod.Name)
			if !ok || w.Enrolled != c.enrolled || w.Eligible != c.eligible {
				t.Fatalf("Pod() = %+v, %v; want enrolled %v, eligible %v", w, ok, c.enrolled, c.eligible)
			}
			var want []string
			if c.enrolled {
				want = []string{"Enrol " + c.pod.Namespace + "/" + c.pod.Name}
			}
			if got := rec.take(); !slices.Equal(got, want) {
				t.Fatalf("events %v, want %v", got, want)
			}
			if got := len(tb.LocalEnrolled()); got != len(want) {
				t.Fatalf("LocalEnrolled has %d pods, want %d", got, len(want))
			}
		})
	}
}

func TestNamespaceRelabelEnrolsRunningPods(t *testing.T) {
	var rec recorder
	tb := newTables(t, func(o *Options) { o.OnEnrolment = rec.on })
	tb.OnAdd(ns("shop", nil), true)
	tb.OnAdd(pod("shop", "cart", localNode, []string{"10.0.0.1"}), true)
	tb.OnAdd(pod("shop", "pay", localNode, []string{"10.0.0.2"}), true)
	tb.OnAdd(pod("shop", "optout", localNode, []string{"10.0.0.3"}, withLabels(map[string]string{"ambit.dev/mesh": "disabled"})), true)
	tb.OnAdd(pod("shop", "remote", "node-b", []string{"10.0.1.1"}), true)
	tb.OnAdd(pod("other", "x", localNode, []string{"10.0.0.4"}), true)
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("events before labelling: %v", got)
	}

	tb.OnUpdate(nil, ns("shop", meshOn))
	got := rec.take()
	slices.Sort(got)
	if want := []string{"Enrol shop/cart", "Enrol shop/pay"}; !slices.Equal(got, want) {
		t.Fatalf("after label: %v, want %v", got, want)
	}
	// The remote pod is not announced but counts as enrolled for routing.
	if r := tb.Resolve(netip.MustParseAddrPort("10.0.1.1:80"), netip.Addr{}); r.Kind != HBONE {
		t.Fatalf("remote pod in labelled namespace: %+v", r)
	}
	// Relabelling with the same value changes nothing.
	tb.OnUpdate(nil, ns("shop", map[string]string{"ambit.dev/mesh": "enabled", "team": "x"}))
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("no-op relabel emitted %v", got)
	}
	// A pod opting out later is released; opting back in enrols it again.
	tb.OnUpdate(nil, pod("shop", "pay", localNode, []string{"10.0.0.2"}, withLabels(map[string]string{"ambit.dev/mesh": "disabled"})))
	tb.OnUpdate(nil, pod("shop", "pay", localNode, []string{"10.0.0.2"}))
	if got, want := rec.take(), []string{"Release shop/pay", "Enrol shop/pay"}; !slices.Equal(got, want) {
		t.Fatalf("opt-out round trip: %v, want %v", got, want)
	}
	// A pod recreated under the same name (new UID) is a new pod.
	tb.OnUpdate(nil, pod("shop", "pay", localNode, []string{"10.0.0.7"}, func(p *corev1.Pod) { p.UID = "new" }))
	if got, want := rec.take(), []string{"Release shop/pay", "Enrol shop/pay"}; !slices.Equal(got, want) {
		t.Fatalf("recreated pod: %v, want %v", got, want)
	}
	if _, ok := tb.Lookup(netip.MustParseAddr("10.0.0.2")); ok {
		t.Fatal("old address of a recreated pod still indexed")
	}
	// Unlabelling releases the running pods.
	tb.OnUpdate(nil, ns("shop", nil))
	got = rec.take()
	slices.Sort(got)
	if want := []string{"Release shop/cart", "Release shop/pay"}; !slices.Equal(got, want) {
		t.Fatalf("after unlabel: %v, want %v", got, want)
	}
	if n := len(tb.LocalEnrolled()); n != 0 {
		t.Fatalf("%d pods still enrolled", n)
	}
	// Deleting an enrolled pod releases it, also through a tombstone.
	tb.OnUpdate(nil, ns("shop", meshOn))
	rec.take()
	tb.OnDelete(cache.DeletedFinalStateUnknown{Key: "shop/cart", Obj: pod("shop", "cart", localNode, nil)})
	if got, want := rec.take(), []string{"Release shop/cart"}; !slices.Equal(got, want) {
		t.Fatalf("delete: %v, want %v", got, want)
	}
	st := tb.Stats()
	if st.LocalEnrolled != 1 || st.LocalPods != 3 || st.Pods != 4 || st.EnrolledNamespaces != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCustomSelectors(t *testing.T) {
	nsSel, _ := labels.Parse("istio.io/dataplane-mode=ambient")
	podSel, _ := labels.Parse("sidecar.istio.io/inject in (true)")
	tb := newTables(t, func(o *Options) { o.NamespaceSelector, o.PodOptOutSelector = nsSel, podSel })
	tb.OnAdd(ns("a", map[string]string{"istio.io/dataplane-mode": "ambient"}), true)
	tb.OnAdd(pod("a", "in", localNode, []string{"10.0.0.1"}), true)
	tb.OnAdd(pod("a", "out", localNode, []string{"10.0.0.2"}, withLabels(map[string]string{"sidecar.istio.io/inject": "true"})), true)
	if w, _ := tb.Pod("a", "in"); !w.Enrolled {
		t.Fatal("pod in selected namespace not enrolled")
	}
	if w, _ := tb.Pod("a", "out"); w.Enrolled {
		t.Fatal("pod matching the opt-out selector enrolled")
	}
}

func TestBadObjectsChangeNothing(t *testing.T) {
	tb := cluster(t, nil)
	before := tb.Stats()
	tb.OnUpdate(nil, pod("mesh", "web-1", "node-a", []string{"10.0.0.999"}))
	tb.OnUpdate(nil, svc("mesh", "web", []string{"not-an-ip"}, nil))
	tb.OnUpdate(nil, eslice("mesh", "web-abc", "web", false, map[string]int32{"http": 8080}, ep{addr: "fd00::1", node: "node-a"}))
	tb.OnAdd("not a kubernetes object", false)
	after := tb.Stats()
	if after.BadObjects != before.BadObjects+3 {
		t.Fatalf("bad objects %d -> %d, want +3", before.BadObjects, after.BadObjects)
	}
	after.BadObjects, after.LastChange, before.LastChange = before.BadObjects, time0, time0
	if after != before {
		t.Fatalf("tables changed: %+v -> %+v", before, after)
	}
	if r := tb.Resolve(netip.MustParseAddrPort("10.96.0.10:81"), netip.Addr{}); r.Endpoint != netip.MustParseAddrPort("10.0.0.1:9000") {
		t.Fatalf("route changed by bad input: %+v", r)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	if _, err := New(Options{LocalNode: "n"}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("missing trust domain: %v", err)
	}
	if _, err := New(Options{TrustDomain: td}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("missing node: %v", err)
	}
}

// A pod in graceful shutdown keeps running its app: it stays enrolled (no
// Release event) and other pods still reach it over HBONE, never in the
// clear. Finishing releases it, flagged Terminating so the capture layer
// keeps its capture until the sandbox goes.
func TestTerminatingPodStaysInMesh(t *testing.T) {
	var rec recorder
	tb := newTables(t, func(o *Options) { o.OnEnrolment = rec.on })
	tb.OnAdd(ns("shop", meshOn), true)
	tb.OnAdd(pod("shop", "web", localNode, []string{"10.0.0.1"}), true)
	if got, want := rec.take(), []string{"Enrol shop/web"}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	tb.OnUpdate(nil, pod("shop", "web", localNode, []string{"10.0.0.1"}, func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }))
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("deletion timestamp emitted %v", got)
	}
	w, _ := tb.Pod("shop", "web")
	if !w.Enrolled || !w.Terminating {
		t.Fatalf("terminating pod: %+v, want enrolled and terminating", w)
	}
	if r := tb.Resolve(netip.MustParseAddrPort("10.0.0.1:8080"), netip.Addr{}); r.Kind != HBONE {
		t.Fatalf("route to a terminating pod: %+v, want HBONE", r)
	}
	tb.OnUpdate(nil, pod("shop", "web", localNode, []string{"10.0.0.1"}, func(p *corev1.Pod) {
		p.DeletionTimestamp = &metav1.Time{}
		p.Status.Phase = corev1.PodSucceeded
	}))
	if got, want := rec.take(), []string{"Release shop/web"}; !slices.Equal(got, want) {
		t.Fatalf("finished: %v, want %v", got, want)
	}
	if w, _ := tb.Pod("shop", "web"); w.Enrolled || !w.Terminating {
		t.Fatalf("finished pod: %+v, want not enrolled, terminating", w)
	}
}

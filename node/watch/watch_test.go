package watch

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	apiwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func objects() []runtime.Object {
	name, port, node := "http", int32(8080), "node-a"
	return []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&corev1.Pod{
			ObjectMeta: fullMeta("shop", "web-1"),
			Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "web"},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"},
		},
		&corev1.Service{
			ObjectMeta: fullMeta("shop", "web"),
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", ClusterIPs: []string{"10.96.0.1"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}}},
		},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, NodeName: &node}},
		},
	}
}

func start(t *testing.T, client *fake.Clientset, onEvent func(tables.Event)) (*Watcher, *tables.Tables) {
	t.Helper()
	tb, err := tables.New(tables.Options{
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		LocalNode:   "node-a", OnEnrolment: onEvent,
	})
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Client: client, Handler: tb})
	if err != nil {
		t.Fatal(err)
	}
	if p := w.Pending(); len(p) != 4 {
		t.Fatalf("before start, pending %v, want all four", p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := w.WaitForSync(sctx); err != nil {
		t.Fatal(err)
	}
	return w, tb
}

func TestWatchFeedsTablesAndEnrolsOnRelabel(t *testing.T) {
	client := fake.NewClientset(objects()...)
	events := make(chan tables.Event, 8)
	w, tb := start(t, client, func(e tables.Event) { events <- e })

	st := w.Status()
	if !st.Synced || len(st.Pending) != 0 || st.LastEvent.IsZero() || st.Stale {
		t.Fatalf("status after sync: %+v", st)
	}
	vip := netip.MustParseAddrPort("10.96.0.1:80")
	if r := tb.Resolve(vip, netip.Addr{}); r.Kind != tables.Passthrough || r.Endpoint != netip.MustParseAddrPort("10.0.0.1:8080") {
		t.Fatalf("before label: %+v", r)
	}
	// The informer cache holds stripped objects.
	for _, in := range w.informers {
		for _, o := range in.inf.GetStore().List() {
			m, err := metaOf(o)
			if err != nil {
				t.Fatal(err)
			}
			if m.GetAnnotations() != nil || m.GetManagedFields() != nil || m.GetOwnerReferences() != nil {
				t.Fatalf("%s cache holds an unstripped object: %+v", in.name, o)
			}
		}
	}

	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"ambit.dev/mesh": "enabled"}}}
	if _, err := client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e.Type != tables.Enrol || e.Workload.Name != "web-1" || e.Workload.Namespace != "shop" {
			t.Fatalf("event %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Enrol event after labelling the namespace")
	}
	r := tb.Resolve(vip, netip.Addr{})
	if r.Kind != tables.HBONE || r.Identity.String() != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Fatalf("after label: %+v", r)
	}

	if err := client.CoreV1().Pods("shop").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e.Type != tables.Release || e.Workload.Name != "web-1" {
			t.Fatalf("event %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Release event after deleting the pod")
	}
}

func TestWatchErrorMarksStaleAndKeepsState(t *testing.T) {
	client := fake.NewClientset(objects()...)
	// Every watch of Services fails; lists work until the API server
	// "goes away" after the agent synced.
	var down atomic.Bool
	client.PrependWatchReactor("services", func(k8stesting.Action) (bool, apiwatch.Interface, error) {
		return true, nil, errors.New("connection refused")
	})
	client.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		if down.Load() {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	w, tb := start(t, client, nil)
	down.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for !w.Status().Stale {
		if time.Now().After(deadline) {
			t.Fatalf("not stale after watch errors: %+v", w.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := w.Status()
	i := slices.IndexFunc(st.Informers, func(s InformerStatus) bool { return s.Name == Services })
	if i < 0 || st.Informers[i].LastError == nil || st.Informers[i].Errors == 0 || !st.Informers[i].Stale || !st.Synced {
		t.Fatalf("status %+v", st)
	}
	if r := tb.Resolve(netip.MustParseAddrPort("10.96.0.1:80"), netip.Addr{}); r.Endpoint != netip.MustParseAddrPort("10.0.0.1:8080") {
		t.Fatalf("last known state not served: %+v", r)
	}
}

func TestStaleClearsAfterWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	tb, _ := tables.New(tables.Options{TrustDomain: spiffeid.RequireTrustDomainFromString("td"), LocalNode: "n"})
	w, err := New(Config{Client: fake.NewClientset(), Handler: tb, StaleAfter: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	w.recordError(w.informers[0], errors.New("boom"))
	if !w.Status().Stale {
		t.Fatal("not stale right after an error")
	}
	now = now.Add(30 * time.Second)
	handler{in: w.informers[0], now: w.cfg.Now, next: tb}.OnAdd(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, false)
	if w.Status().Stale {
		t.Fatal("still stale after an event")
	}
	w.recordError(w.informers[0], errors.New("boom"))
	now = now.Add(61 * time.Second)
	if w.Status().Stale {
		t.Fatal("still stale after StaleAfter without errors")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("empty config: %v", err)
	}
	if _, err := New(Config{Client: fake.NewClientset()}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("no handler: %v", err)
	}
}

func metaOf(o any) (metav1.Object, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return nil, errors.New("not an object")
	}
	return m, nil
}

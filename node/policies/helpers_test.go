package policies

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"
)

const root = "ambit-system"

// noDynamic satisfies dynamic.Interface for tests that never start the
// informers (the stores are replaced).
type noDynamic struct{}

func (noDynamic) Resource(schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return nil
}

// recorder is a hand-written patcher: it records patches and returns the
// errors queued in errs (then nil).
type recorder struct {
	mu      sync.Mutex
	patches []recorded
	errs    []error
}

type recorded struct {
	resource, namespace, name string
	patch                     []byte
}

func (r *recorder) PatchStatus(_ context.Context, k *kindWatch, ns, name string, patch []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.patches = append(r.patches, recorded{k.name, ns, name, patch})
	if len(r.errs) > 0 {
		err := r.errs[0]
		r.errs = r.errs[1:]
		return err
	}
	return nil
}

func (r *recorder) take() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.patches
	r.patches = nil
	return p
}

// fixture is a Watcher whose stores are plain cache.Stores filled by the
// test; apply and writeStatuses are called directly.
type fixture struct {
	w      *Watcher
	engine *authz.Engine
	live   *authz.Live
	rec    *recorder
	stores map[string]cache.Store // by resource name
	now    time.Time
}

func newFixture(t *testing.T, istio bool) *fixture {
	t.Helper()
	e, err := authz.New(authz.Options{RootNamespace: root})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{engine: e, live: authz.NewLive(), rec: &recorder{}, stores: map[string]cache.Store{},
		now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	w, err := New(Config{
		Dynamic: noDynamic{}, Engine: e, Live: f.live, RootNamespace: root, WriteStatus: true,
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return f.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	w.patch = f.rec
	if istio {
		for _, gvr := range []schema.GroupVersionResource{
			{Group: IstioGroup, Version: "v1", Resource: "authorizationpolicies"},
			{Group: IstioGroup, Version: "v1", Resource: "peerauthentications"},
		} {
			kd := kindAP
			if gvr.Resource == "peerauthentications" {
				kd = kindPA
			}
			w.kinds = append(w.kinds, &kindWatch{name: resourceName(gvr), kind: kd, istio: true, gvr: gvr})
		}
	}
	for _, k := range w.kinds {
		k.store = cache.NewStore(cache.MetaNamespaceKeyFunc)
		k.reg = nil
		f.stores[k.name] = k.store
	}
	f.w = w
	return f
}

const (
	resAP      = "authorizationpolicies.security.ambit.dev/v1alpha1"
	resPA      = "peerauthentications.security.ambit.dev/v1alpha1"
	resIstioAP = "authorizationpolicies.security.istio.io/v1"
	resIstioPA = "peerauthentications.security.istio.io/v1"
)

// obj parses YAML into an unstructured object.
func obj(t testing.TB, y string) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatalf("bad test YAML: %v\n%s", err, y)
	}
	u := &unstructured.Unstructured{}
	// As the API server's objects decode: integers as int64.
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatalf("bad test object: %v\n%s", err, y)
	}
	return u
}

func (f *fixture) put(t *testing.T, res string, u *unstructured.Unstructured) {
	t.Helper()
	if err := f.stores[res].Add(u); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) del(t *testing.T, res string, u *unstructured.Unstructured) {
	t.Helper()
	if err := f.stores[res].Delete(u); err != nil {
		t.Fatal(err)
	}
}

var (
	podIP    = netip.MustParseAddr("10.0.0.5")
	clientIP = netip.MustParseAddr("10.0.1.7")
)

// decide asks the engine about a connection to pod web (labels app=web) in
// namespace shop, port 8080, from the given principal ("" = plaintext).
func decide(e *authz.Engine, principal string) authz.Decision {
	return e.Decide(request(principal))
}

func request(principal string) authz.Request {
	r := authz.Request{
		Workload:    authz.Workload{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web"}},
		Source:      authz.Source{IP: clientIP},
		Destination: authz.Destination{IP: podIP, Port: 8080},
	}
	if principal != "" {
		r.Source.Principal = spiffeid.RequireFromString("spiffe://" + principal)
		r.Secure = true
	}
	return r
}

// conditionOf finds a condition in a status patch or object map.
func conditionOf(t *testing.T, m map[string]any, typ string) metav1.Condition {
	t.Helper()
	list, _, _ := unstructured.NestedSlice(m, "status", "conditions")
	for _, item := range list {
		c := item.(map[string]any)
		if c["type"] == typ {
			return metav1.Condition{Type: typ, Status: metav1.ConditionStatus(c["status"].(string)),
				Reason: c["reason"].(string), Message: c["message"].(string)}
		}
	}
	t.Fatalf("no %s condition in %v", typ, m)
	return metav1.Condition{}
}

var errBoom = errors.New("boom")

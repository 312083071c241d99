package policies

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/ambit-mesh/ambit/node/authz"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const allowClient = `
apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {namespace: shop, name: allow-client, uid: u1, resourceVersion: "1", generation: 1}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
  - to: [{operation: {methods: [GET]}}]
`

// TestApplyFeedsEngineClosesLiveAndWritesStatus walks one policy through
// add, update and delete: Engine decisions follow, a live connection the
// update denies is closed, and the status patches say what was ignored.
func TestApplyFeedsEngineClosesLiveAndWritesStatus(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	f.w.apply()
	if !f.w.Synced() || !decide(f.engine, "cluster.local/ns/other/sa/x").Allow {
		t.Fatal("empty set: not synced or not allow-all")
	}

	ap := obj(t, allowClient)
	f.put(t, resAP, ap)
	f.w.apply()
	if d := decide(f.engine, "cluster.local/ns/shop/sa/client"); !d.Allow || d.Policy != "shop/allow-client" {
		t.Fatalf("client: %v", d)
	}
	if d := decide(f.engine, "cluster.local/ns/other/sa/x"); d.Allow {
		t.Fatalf("other: %v", d)
	}

	// The status says the L7 rule was dropped.
	f.w.writeStatuses(ctx)
	ps := f.rec.take()
	if len(ps) != 1 || ps[0].resource != resAP || ps[0].namespace != "shop" || ps[0].name != "allow-client" {
		t.Fatalf("patches %+v", ps)
	}
	var patch map[string]any
	if err := json.Unmarshal(ps[0].patch, &patch); err != nil {
		t.Fatal(err)
	}
	if rv, _, _ := unstructured.NestedString(patch, "metadata", "resourceVersion"); rv != "1" {
		t.Fatalf("patch without the resourceVersion precondition: %s", ps[0].patch)
	}
	if g, _, _ := unstructured.NestedFieldNoCopy(patch, "status", "observedGeneration"); g != float64(1) { // JSON number
		t.Fatalf("observedGeneration %v", g)
	}
	acc := conditionOf(t, patch, v1alpha1.ConditionAccepted)
	part := conditionOf(t, patch, v1alpha1.ConditionPartiallyEnforced)
	if acc.Status != "True" || part.Status != "True" || !strings.Contains(part.Message, "methods") {
		t.Fatalf("conditions: %+v %+v", acc, part)
	}

	// The API server stores the patch; the next pass finds nothing to do.
	stored := applyMergePatch(t, ap, ps[0].patch, "2")
	f.put(t, resAP, stored)
	if !statusOnly(ap, stored) {
		t.Fatal("a status write is not recognised as status-only")
	}
	f.w.writeStatuses(ctx)
	if ps := f.rec.take(); len(ps) != 0 {
		t.Fatalf("status rewritten although equal: %s", ps[0].patch)
	}

	// A live connection from client; the policy changes to another
	// principal; the connection is closed.
	var closedWith *authz.Decision
	f.live.Register(request("cluster.local/ns/shop/sa/client"), func(d authz.Decision) { closedWith = &d })
	changed := obj(t, strings.NewReplacer(`sa/client`, `sa/other`, `"1"`, `"3"`, `generation: 1`, `generation: 2`).Replace(allowClient))
	if statusOnly(stored, changed) {
		t.Fatal("a spec change is taken for status-only")
	}
	f.put(t, resAP, changed)
	f.w.apply()
	if closedWith == nil || closedWith.Allow || f.w.Stats().ClosedConnections != 1 || f.live.Len() != 0 {
		t.Fatalf("live connection not closed: %v, stats %+v", closedWith, f.w.Stats())
	}

	// Delete: allow-all again, no status to write.
	f.del(t, resAP, changed)
	f.w.apply()
	if !decide(f.engine, "cluster.local/ns/other/sa/x").Allow {
		t.Fatal("deleted policy still enforced")
	}
	f.w.writeStatuses(ctx)
	if ps := f.rec.take(); len(ps) != 0 {
		t.Fatalf("patched a deleted object: %+v", ps)
	}
	st := f.w.Status()
	if !st.Synced || st.LastApply != f.now || len(st.Pending) != 0 || st.Stale || len(st.Malformed) != 0 {
		t.Fatalf("status %+v", st)
	}
	if s := f.w.Stats(); s.Applies != 4 || s.StatusWrites != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// applyMergePatch does what the API server does with our status patch
// (enough of RFC 7386 for it): status replaced, resourceVersion bumped.
func applyMergePatch(t *testing.T, u *unstructured.Unstructured, patch []byte, rv string) *unstructured.Unstructured {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(patch, &p); err != nil {
		t.Fatal(err)
	}
	out := u.DeepCopy()
	out.Object["status"] = p["status"]
	// JSON numbers decode as float64; the API server returns integers.
	if g, ok := p["status"].(map[string]any)["observedGeneration"].(float64); ok {
		out.Object["status"].(map[string]any)["observedGeneration"] = int64(g)
	}
	out.SetResourceVersion(rv)
	return out
}

func TestStatusConflictsAndErrors(t *testing.T) {
	f := newFixture(t, false)
	f.put(t, resAP, obj(t, allowClient))
	f.w.apply()
	gr := schema.GroupResource{Group: v1alpha1.GroupName, Resource: "authorizationpolicies"}
	f.rec.errs = []error{apierrors.NewConflict(gr, "allow-client", errBoom), errBoom, apierrors.NewNotFound(gr, "allow-client")}
	for range 3 {
		f.w.writeStatuses(context.Background())
	}
	if s := f.w.Stats(); s.StatusConflicts != 1 || s.StatusErrors != 1 || s.StatusWrites != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestIstioObjectsEnforcedNeverWritten: an Istio DENY and an ambit policy
// of the same namespace/name are both in force; only the ambit object's
// status is written.
func TestIstioObjectsEnforcedNeverWritten(t *testing.T) {
	f := newFixture(t, true)
	f.put(t, resAP, obj(t, allowClient))
	f.put(t, resIstioAP, obj(t, `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {namespace: shop, name: allow-client, uid: i1, resourceVersion: "5", generation: 1}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [shop]}}]}]}`))
	f.put(t, resIstioPA, obj(t, `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {namespace: shop, name: strict, uid: i2, resourceVersion: "6", generation: 1}
spec: {mtls: {mode: STRICT}}`))
	f.w.apply()
	if d := decide(f.engine, "cluster.local/ns/shop/sa/client"); d.Allow || d.Policy != "shop/istio:allow-client" {
		t.Fatalf("istio DENY not enforced next to the ambit ALLOW: %v", d)
	}
	if d := decide(f.engine, ""); d.Allow || d.MTLSMode != v1alpha1.MTLSStrict {
		t.Fatalf("istio STRICT not enforced: %v", d)
	}
	f.w.writeStatuses(context.Background())
	for _, p := range f.rec.take() {
		if strings.Contains(p.resource, "istio") {
			t.Fatalf("wrote the status of an Istio object: %+v", p)
		}
	}
	st := f.w.Status()
	counts := map[string]int{}
	for _, r := range st.Resources {
		counts[r.Name] = r.Objects
	}
	if counts[resAP] != 1 || counts[resIstioAP] != 1 || counts[resIstioPA] != 1 || counts[resPA] != 0 {
		t.Fatalf("counts %v", counts)
	}
}

// TestMalformedReportedAndMemoized: a malformed ambit object is enforced
// fail closed, listed, counted once per version, and its status says so.
func TestMalformedReportedAndMemoized(t *testing.T) {
	f := newFixture(t, false)
	bad := obj(t, brokenDeny)
	f.put(t, resAP, bad)
	f.w.apply()
	f.w.apply()
	if d := decide(f.engine, "cluster.local/ns/shop/sa/client"); d.Allow || d.Policy != "shop/broken" {
		t.Fatalf("malformed DENY not enforced fail closed: %v", d)
	}
	st := f.w.Status()
	if len(st.Malformed) != 1 || st.Malformed[0].Name != "broken" || st.Malformed[0].Reason != ReasonMalformed {
		t.Fatalf("malformed %+v", st.Malformed)
	}
	if n := f.w.Stats().ConversionFailures; n != 1 {
		t.Fatalf("conversion failures %d after two applies of one version, want 1", n)
	}
	f.w.writeStatuses(context.Background())
	ps := f.rec.take()
	if len(ps) != 1 {
		t.Fatalf("patches %+v", ps)
	}
	var patch map[string]any
	_ = json.Unmarshal(ps[0].patch, &patch)
	if c := conditionOf(t, patch, v1alpha1.ConditionAccepted); c.Status != "False" || c.Reason != ReasonMalformed ||
		!strings.Contains(c.Message, "DENY of every connection") {
		t.Fatalf("Accepted %+v", c)
	}
	// A fixed version is converted again and leaves the list.
	f.put(t, resAP, obj(t, strings.NewReplacer(`rules: "all"`, `rules: [{from: [{source: {namespaces: [evil]}}]}]`, `"9"`, `"10"`).Replace(brokenDeny)))
	f.w.apply()
	if st := f.w.Status(); len(st.Malformed) != 0 || !decide(f.engine, "cluster.local/ns/shop/sa/client").Allow {
		t.Fatalf("fixed object: malformed %+v", st.Malformed)
	}
	if n := f.w.Stats().ConversionFailures; n != 1 {
		t.Fatalf("conversion failures %d, want 1", n)
	}
}

const brokenDeny = `
apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {namespace: shop, name: broken, uid: b1, resourceVersion: "9", generation: 4}
spec: {action: DENY, rules: "all"}`

func TestApplyWaitsForSync(t *testing.T) {
	f := newFixture(t, false)
	f.w.kinds[0].reg = notSynced{}
	f.put(t, resAP, obj(t, allowClient))
	f.w.apply()
	if f.w.Synced() || f.w.Stats().Applies != 0 || f.engine.Generation() != 0 {
		t.Fatal("applied before every informer synced")
	}
	if p := f.w.Status().Pending; len(p) != 1 || p[0] != resAP {
		t.Fatalf("pending %v", p)
	}
	// After the first apply, an unsynced (Istio, started later) informer
	// is left out instead of holding everything back.
	f.w.kinds[0].reg = nil
	f.w.apply()
	extra := &kindWatch{name: resIstioAP, kind: kindAP, istio: true, reg: notSynced{}}
	f.w.kinds = append(f.w.kinds, extra)
	f.put(t, resAP, obj(t, strings.Replace(allowClient, `"1"`, `"2"`, 1)))
	before := f.engine.Generation()
	f.w.apply()
	if f.engine.Generation() != before+1 {
		t.Fatal("an unsynced late informer held back the apply")
	}
}

type notSynced struct{}

func (notSynced) HasSynced() bool { return false }

// TestStaleAfterWatchError: a watch failure after the last event marks the
// resource (and the watch) stale for StaleAfter; policies stay in force.
func TestStaleAfterWatchError(t *testing.T) {
	f := newFixture(t, false)
	f.put(t, resAP, obj(t, allowClient))
	f.w.apply()
	k := f.w.kinds[0]
	handler{w: f.w, k: k}.OnAdd(nil, false) // an event at f.now
	f.now = f.now.Add(time.Second)
	f.w.recordWatchError(k, errBoom)
	st := f.w.Status()
	if !st.Stale || !st.Resources[0].Stale || st.Resources[0].LastError != "boom" || st.Resources[0].Errors != 1 ||
		f.w.Stats().WatchErrors != 1 {
		t.Fatalf("after a watch error: %+v", st)
	}
	if decide(f.engine, "cluster.local/ns/other/sa/x").Allow {
		t.Fatal("policies dropped on a watch error")
	}
	f.now = f.now.Add(DefaultStaleAfter)
	if f.w.Status().Stale {
		t.Fatal("still stale after StaleAfter")
	}
	f.now = f.now.Add(time.Second)
	f.w.recordWatchError(k, errBoom)
	handler{w: f.w, k: k}.OnDelete(nil) // an event after the error
	if f.w.Status().Stale {
		t.Fatal("stale although an event arrived after the error")
	}
}

package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/policies"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const policiesRoot = "ambit-system"

// policyNode is one simulated node daemon: its own Engine, Live registry
// and policies.Watcher against the shared API server.
type policyNode struct {
	engine *authz.Engine
	live   *authz.Live
	w      *policies.Watcher
}

func startPolicyNode(ctx context.Context, t *testing.T, c *cluster.Cluster, name string) *policyNode {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name)
	e, err := authz.New(authz.Options{RootNamespace: policiesRoot, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	n := &policyNode{engine: e, live: authz.NewLive()}
	n.w, err = policies.New(policies.Config{
		Dynamic:       dynamic.NewForConfigOrDie(c.RESTConfig()),
		Discovery:     c.Clientset().Discovery(),
		Engine:        e,
		Live:          n.live,
		RootNamespace: policiesRoot,
		Istio:         true,
		IstioRecheck:  time.Second,
		WriteStatus:   true,
		Logger:        log,
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- n.w.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: Run: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s: Run did not return after cancel", name)
		}
	})
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if err := n.w.WaitForSync(sctx); err != nil {
		t.Fatal(err)
	}
	return n
}

func connTo(ns string, principal string, port uint16) authz.Request {
	r := authz.Request{
		Workload:    authz.Workload{Namespace: ns, Name: "web-1", Labels: map[string]string{"app": "web"}},
		Source:      authz.Source{IP: netip.MustParseAddr("10.250.0.9")},
		Destination: authz.Destination{IP: netip.MustParseAddr("10.250.0.5"), Port: port},
	}
	if principal != "" {
		r.Source.Principal = spiffeid.RequireFromString("spiffe://" + principal)
		r.Secure = true
	}
	return r
}

// eventually polls cond every 20 ms until it holds or 20 s pass.
func policyEventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	for !cond() {
		if time.Since(t0) > 20*time.Second {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(t0)
}

func createYAML(ctx context.Context, t *testing.T, dc dynamic.Interface, gvr schema.GroupVersionResource, y string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatal(err)
	}
	out, err := dc.Resource(gvr).Namespace(u.GetNamespace()).Create(ctx, u, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s %s/%s: %v", gvr.Resource, u.GetNamespace(), u.GetName(), err)
	}
	return out
}

func condition(u *unstructured.Unstructured, typ string) (status, reason, message string, gen int64) {
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, item := range list {
		c, _ := item.(map[string]any)
		if c["type"] == typ {
			g, _, _ := unstructured.NestedInt64(c, "observedGeneration")
			s, _ := c["status"].(string)
			r, _ := c["reason"].(string)
			m, _ := c["message"].(string)
			return s, r, m, g
		}
	}
	return "", "", "", 0
}

// TestPolicyWatch runs node/policies against a real kube-apiserver: two
// watchers (two simulated node daemons) with the chart's CRDs; an ambit
// policy changes Engine decisions on both and closes a live connection it
// now denies; its status says what was ignored and is written once, not
// fought over; Istio's CRDs, installed after the watchers started, are
// found by the periodic check (AuthorizationPolicy as v1 of v1/v1beta1,
// PeerAuthentication as its only version v1beta1) and their objects are
// enforced, a malformed one fail closed, none of their statuses written.
func TestPolicyWatch(t *testing.T) {
	opts := cluster.Options{Nodes: 1, NoDNS: true, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	cluster.SkipIfUnavailable(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // includes waiting for another package's cluster
	defer cancel()
	c, err := cluster.Start(ctx, t, opts)
	if err != nil {
		t.Fatal(err)
	}
	root, err := cluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cs := c.Clientset()
	for _, ns := range []string{policiesRoot, "shop", "other"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := c.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(root, "charts", "ambit", "crds")); err != nil {
		t.Fatal(err, out)
	}
	if out, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/authorizationpolicies.security.ambit.dev", "crd/peerauthentications.security.ambit.dev"); err != nil {
		t.Fatal(err, out)
	}
	dc := dynamic.NewForConfigOrDie(c.RESTConfig())

	nodes := []*policyNode{startPolicyNode(ctx, t, c, "node-a"), startPolicyNode(ctx, t, c, "node-b")}
	client := "cluster.local/ns/shop/sa/client"
	stranger := "cluster.local/ns/other/sa/x"
	for _, n := range nodes {
		if d := n.engine.Decide(connTo("shop", stranger, 8080)); !d.Allow {
			t.Fatalf("no policies yet, but denied: %v", d)
		}
		if st := n.w.Status(); st.Istio.AuthorizationPolicies != "" {
			t.Fatalf("Istio found before its CRDs exist: %+v", st.Istio)
		}
	}

	// A live connection from the stranger to shop/web on node-a.
	var closed atomic.Pointer[authz.Decision]
	nodes[0].live.Register(connTo("shop", stranger, 8080), func(d authz.Decision) { closed.Store(&d) })

	// An ambit ALLOW for the client, with an L7 rule that must be dropped.
	apGVR := schema.GroupVersionResource{Group: v1alpha1.GroupName, Version: "v1alpha1", Resource: v1alpha1.ResourceAuthorizationPolicies}
	created := createYAML(ctx, t, dc, apGVR, `
apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {namespace: shop, name: allow-client}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["`+client+`"]}}]
  - to: [{operation: {methods: [GET], ports: ["8080"]}}]
`)
	took := policyEventually(t, "live connection closed on node-a", func() bool { return closed.Load() != nil })
	t.Logf("policy created -> live connection closed: %s (Debounce %s)", took.Round(time.Millisecond), policies.DefaultDebounce)
	if d := closed.Load(); d.Allow || d.Reason != authz.ReasonNoAllowMatch {
		t.Fatalf("closed with %v", d)
	}
	for i, n := range nodes {
		policyEventually(t, fmt.Sprintf("node %d enforces allow-client", i), func() bool {
			return !n.engine.Decide(connTo("shop", stranger, 8080)).Allow
		})
		if d := n.engine.Decide(connTo("shop", client, 8080)); !d.Allow || d.Policy != "shop/allow-client" {
			t.Fatalf("node %d: client %v", i, d)
		}
	}

	// The status: accepted, partially enforced (the methods rule dropped).
	var cur *unstructured.Unstructured
	policyEventually(t, "status written", func() bool {
		cur, err = dc.Resource(apGVR).Namespace("shop").Get(ctx, "allow-client", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s, _, _, _ := condition(cur, v1alpha1.ConditionPartiallyEnforced)
		return s != ""
	})
	if s, _, _, g := condition(cur, v1alpha1.ConditionAccepted); s != "True" || g != created.GetGeneration() {
		t.Fatalf("Accepted %s (generation %d): %v", s, g, cur.Object["status"])
	}
	if s, r, m, _ := condition(cur, v1alpha1.ConditionPartiallyEnforced); s != "True" || r != authz.ReasonPartiallyEnforced || !strings.Contains(m, "methods") {
		t.Fatalf("PartiallyEnforced %s %s %q", s, r, m)
	}
	t.Logf("status: %v", cur.Object["status"])
	// Two nodes, one write: after the status jitter has passed on both, the
	// object is unchanged and exactly one status write succeeded.
	rv := cur.GetResourceVersion()
	time.Sleep(policies.DefaultStatusJitter + time.Second)
	again, err := dc.Resource(apGVR).Namespace("shop").Get(ctx, "allow-client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writes, conflicts := uint64(0), uint64(0)
	for _, n := range nodes {
		writes += n.w.Stats().StatusWrites
		conflicts += n.w.Stats().StatusConflicts
	}
	if again.GetResourceVersion() != rv || writes != 1 {
		t.Fatalf("status fought over: resourceVersion %s -> %s, %d writes (%d conflicts)", rv, again.GetResourceVersion(), writes, conflicts)
	}
	t.Logf("status writes %d, conflicts %d", writes, conflicts)

	// Istio's CRDs appear; the periodic check finds them.
	if out, err := c.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(root, "e2e", "testdata", "istio-security-crds.yaml")); err != nil {
		t.Fatal(err, out)
	}
	if out, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/authorizationpolicies.security.istio.io", "crd/peerauthentications.security.istio.io"); err != nil {
		t.Fatal(err, out)
	}
	for i, n := range nodes {
		policyEventually(t, fmt.Sprintf("node %d watches Istio", i), func() bool {
			st := n.w.Status()
			return st.Istio.AuthorizationPolicies != "" && st.Istio.PeerAuthentications != "" && len(st.Pending) == 0
		})
		if st := n.w.Status(); st.Istio.AuthorizationPolicies != "security.istio.io/v1" || st.Istio.PeerAuthentications != "security.istio.io/v1beta1" {
			t.Fatalf("node %d: Istio versions %+v", i, st.Istio)
		}
	}
	istioAP := schema.GroupVersionResource{Group: policies.IstioGroup, Version: "v1", Resource: "authorizationpolicies"}
	istioPA := schema.GroupVersionResource{Group: policies.IstioGroup, Version: "v1beta1", Resource: "peerauthentications"}
	// An Istio DENY with the same name as the ambit ALLOW: both in force.
	createYAML(ctx, t, dc, istioAP, `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {namespace: shop, name: allow-client}
spec: {action: DENY, rules: [{to: [{operation: {ports: ["9090"]}}]}]}
`)
	// STRICT in shop, Istio v1beta1.
	createYAML(ctx, t, dc, istioPA, `
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {namespace: shop, name: strict}
spec: {mtls: {mode: STRICT}}
`)
	// A malformed Istio ALLOW in "other": enforced as allow-nothing there.
	createYAML(ctx, t, dc, istioAP, `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {namespace: other, name: broken}
spec: {rules: "everyone"}
`)
	for i, n := range nodes {
		policyEventually(t, fmt.Sprintf("node %d enforces the Istio policies", i), func() bool {
			d := n.engine.Decide(connTo("shop", client, 9090))
			p := n.engine.Decide(connTo("shop", "", 8080))
			o := n.engine.Decide(connTo("other", client, 8080))
			return !d.Allow && d.Policy == "shop/istio:allow-client" &&
				!p.Allow && p.Reason == authz.ReasonStrictNoIdentity &&
				!o.Allow && o.Reason == authz.ReasonNoAllowMatch
		})
		if d := n.engine.Decide(connTo("shop", client, 8080)); !d.Allow || d.Policy != "shop/allow-client" {
			t.Fatalf("node %d: ambit policy lost next to Istio's: %v", i, d)
		}
		st := n.w.Status()
		if len(st.Malformed) != 1 || st.Malformed[0].Name != "broken" || st.Malformed[0].Reason != policies.ReasonMalformed ||
			!strings.Contains(st.Malformed[0].Message, "spec.rules") || n.w.Stats().ConversionFailures != 1 {
			t.Fatalf("node %d: malformed %+v, stats %+v", i, st.Malformed, n.w.Stats())
		}
	}
	// Istio objects' status is never written.
	time.Sleep(policies.DefaultStatusJitter + 500*time.Millisecond)
	for _, ref := range []struct {
		gvr      schema.GroupVersionResource
		ns, name string
	}{{istioAP, "shop", "allow-client"}, {istioAP, "other", "broken"}, {istioPA, "shop", "strict"}} {
		u, err := dc.Resource(ref.gvr).Namespace(ref.ns).Get(ctx, ref.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, found := u.Object["status"]; found {
			t.Fatalf("status written to Istio object %s/%s: %v", ref.ns, ref.name, u.Object["status"])
		}
	}

	// Deleting the ambit policy: allow-all for the stranger on port 8080
	// again (the Istio policies stay).
	if err := dc.Resource(apGVR).Namespace("shop").Delete(ctx, "allow-client", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		policyEventually(t, fmt.Sprintf("node %d drops the deleted policy", i), func() bool {
			return n.engine.Decide(connTo("shop", stranger, 8080)).Allow
		})
	}
}

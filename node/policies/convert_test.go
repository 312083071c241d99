package policies

import (
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/ambit-mesh/ambit/node/authz"
)

const apHead = `
apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {namespace: shop, name: p, uid: u1, resourceVersion: "7", generation: 3}
`

func TestConvertAuthorizationPolicy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		yaml  string
		istio bool
		// want: nil ap (nothing enforced), or action and rule count of
		// what is enforced; reason "" means no problem.
		wantNil    bool
		wantAction v1alpha1.Action
		wantRules  int
		wantSel    bool
		wantReason string
		wantText   string // in conversionProblem.String()
	}{
		{name: "valid", yaml: apHead + `spec: {action: DENY, selector: {matchLabels: {app: web}}, rules: [{from: [{source: {namespaces: [x]}}]}]}`,
			wantAction: v1alpha1.ActionDeny, wantRules: 1, wantSel: true},
		{name: "istio status of another shape is ignored", istio: true,
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {namespace: shop, name: p}
spec: {rules: [{}]}
status: {validationMessages: [{type: {code: IST0101}}], observedGeneration: "1", conditions: 5}`,
			wantAction: "", wantRules: 1},
		{name: "malformed ALLOW: allow nothing on its selector",
			yaml:       apHead + `spec: {selector: {matchLabels: {app: web}}, rules: "everything"}`,
			wantAction: v1alpha1.ActionAllow, wantRules: 0, wantSel: true, wantReason: ReasonMalformed,
			wantText: "spec.rules: cannot restore slice from string; enforced instead: an ALLOW policy admitting nothing, on the pods of namespace shop labelled app=web"},
		{name: "malformed DENY: deny all of the namespace when the selector is unreadable",
			yaml:       apHead + `spec: {action: DENY, selector: {matchLabels: "app=web"}, rules: [{from: 1}]}`,
			wantAction: v1alpha1.ActionDeny, wantRules: 1, wantReason: ReasonMalformed,
			wantText: "spec.rules: cannot restore slice from int64; enforced instead: DENY of every connection to the pods of namespace shop"},
		{name: "malformed, action unreadable: deny all",
			yaml:       apHead + `spec: {action: [ALLOW]}`,
			wantAction: v1alpha1.ActionDeny, wantRules: 1, wantReason: ReasonMalformed},
		{name: "malformed AUDIT: nothing enforced",
			yaml:    apHead + `spec: {action: AUDIT, rules: [{when: "x"}]}`,
			wantNil: true, wantReason: ReasonMalformed, wantText: "AUDIT"},
		{name: "unknown field in ALLOW: allow nothing",
			yaml:       apHead + `spec: {rules: [{from: [{source: {principals: [a], futureNarrowing: [b]}}]}]}`,
			wantAction: v1alpha1.ActionAllow, wantRules: 0, wantReason: ReasonUnknownFields, wantText: "futureNarrowing"},
		{name: "unknown field in CUSTOM (provider): decoded, enforced as DENY by the engine", istio: true,
			yaml:       apHead + `spec: {action: CUSTOM, provider: {name: ext}, rules: [{to: [{operation: {ports: ["8080"]}}]}]}`,
			wantAction: "CUSTOM", wantRules: 1, wantReason: ReasonUnknownFields, wantText: "provider"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := convertAP(obj(t, tc.yaml), tc.istio, root)
			if res.pa != nil {
				t.Fatal("AuthorizationPolicy converted to a PeerAuthentication")
			}
			if tc.wantReason == "" && res.problem != nil {
				t.Fatalf("unexpected problem: %s", res.problem)
			}
			if tc.wantReason != "" {
				if res.problem == nil || res.problem.Reason != tc.wantReason || !strings.Contains(res.problem.String(), tc.wantText) {
					t.Fatalf("problem = %v, want reason %s mentioning %q", res.problem, tc.wantReason, tc.wantText)
				}
			}
			if tc.wantNil {
				if res.ap != nil {
					t.Fatalf("enforced %+v, want nothing", res.ap)
				}
				return
			}
			ap := res.ap
			if ap == nil {
				t.Fatal("nothing enforced")
			}
			if ap.Namespace != "shop" || ap.Spec.Action != tc.wantAction || len(ap.Spec.Rules) != tc.wantRules ||
				(ap.Spec.Selector != nil) != tc.wantSel {
				t.Fatalf("enforced %+v", ap)
			}
			wantName := "p"
			if tc.istio {
				wantName = "istio:p"
			}
			if ap.Name != wantName {
				t.Fatalf("name %q, want %q", ap.Name, wantName)
			}
		})
	}
}

func TestConvertPeerAuthentication(t *testing.T) {
	good := convertPA(obj(t, `
apiVersion: security.ambit.dev/v1alpha1
kind: PeerAuthentication
metadata: {namespace: shop, name: pa}
spec: {selector: {matchLabels: {app: web}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {"8080": {mode: STRICT}}}`), false, root)
	if good.problem != nil || good.pa == nil || good.pa.Spec.PortLevelMtls["8080"].Mode != v1alpha1.MTLSStrict {
		t.Fatalf("valid PeerAuthentication: %+v %v", good.pa, good.problem)
	}
	bad := convertPA(obj(t, `
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {namespace: ambit-system, name: pa}
spec: {mtls: {mode: [PERMISSIVE]}}`), true, root)
	if bad.problem == nil || bad.problem.Reason != ReasonMalformed || bad.pa == nil || bad.pa.Name != "istio:pa" ||
		bad.pa.Spec.Mtls.Mode != v1alpha1.MTLSStrict || bad.pa.Spec.Selector != nil ||
		!strings.Contains(bad.problem.String(), "mTLS STRICT on every pod of the mesh") {
		t.Fatalf("malformed mesh PeerAuthentication: %+v %v", bad.pa, bad.problem)
	}
	unknown := convertPA(obj(t, `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {namespace: shop, name: pa}
spec: {selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}, tunnel: {}}`), true, root)
	if unknown.problem == nil || unknown.problem.Reason != ReasonUnknownFields || unknown.pa.Spec.Mtls.Mode != v1alpha1.MTLSStrict ||
		unknown.pa.Spec.Selector.MatchLabels["app"] != "web" {
		t.Fatalf("PeerAuthentication with unknown fields: %+v %v", unknown.pa, unknown.problem)
	}
}

// TestStandInsNeverWiden feeds each malformed policy's stand-in to a real
// Engine next to a valid ALLOW policy and checks that no connection the
// valid set denies is allowed with the stand-in.
func TestStandInsNeverWiden(t *testing.T) {
	valid := obj(t, apHead+`spec: {rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]}]}`)
	malformed := []string{
		apHead + `spec: {rules: 7}`,
		apHead + `spec: {action: DENY, rules: 7}`,
		apHead + `spec: {action: 7}`,
		apHead + `spec: {selector: {matchLabels: {app: other}}, rules: [{from: [{source: {principals: 1}}]}]}`,
		apHead + `spec: {rules: [{from: [{source: {principals: ["*"], narrowing: [x]}}]}]}`,
	}
	principals := []string{"", "cluster.local/ns/shop/sa/client", "cluster.local/ns/other/sa/x"}
	for _, m := range malformed {
		e, _ := authz.New(authz.Options{RootNamespace: root})
		v := convertAP(valid, false, root).ap
		e.Update([]*v1alpha1.AuthorizationPolicy{v}, nil)
		before := map[string]bool{}
		for _, p := range principals {
			before[p] = decide(e, p).Allow
		}
		m2 := obj(t, strings.Replace(m, "name: p", "name: broken", 1))
		res := convertAP(m2, false, root)
		if res.problem == nil {
			t.Fatalf("%s: no problem reported", m)
		}
		aps := []*v1alpha1.AuthorizationPolicy{v}
		if res.ap != nil {
			aps = append(aps, res.ap)
		}
		e.Update(aps, nil)
		for _, p := range principals {
			if after := decide(e, p).Allow; after && !before[p] {
				t.Errorf("%s: stand-in allows %q, which the valid set denies", m, p)
			}
		}
	}
	// A malformed DENY denies what was allowed.
	e, _ := authz.New(authz.Options{RootNamespace: root})
	e.Update([]*v1alpha1.AuthorizationPolicy{convertAP(obj(t, apHead+`spec: {action: DENY, rules: 7}`), false, root).ap}, nil)
	if d := decide(e, "cluster.local/ns/shop/sa/client"); d.Allow {
		t.Fatalf("malformed DENY stand-in allowed: %v", d)
	}
}

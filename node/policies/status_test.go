package policies

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func cond(typ string, status metav1.ConditionStatus, reason, msg string, gen int64, at time.Time) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
		LastTransitionTime: metav1.NewTime(at)}
}

func TestMergeConditions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Hour) // another node's clock, or later
	acc := v1alpha1.ConditionAccepted
	part := v1alpha1.ConditionPartiallyEnforced
	want := []metav1.Condition{
		cond(acc, "True", "Accepted", "in force", 2, t1),
		cond(part, "False", "FullyEnforced", "ok", 2, t1),
	}
	for _, tc := range []struct {
		name        string
		cur         []metav1.Condition
		wantChanged bool
		wantOut     []metav1.Condition
	}{
		{name: "empty status", cur: nil, wantChanged: true, wantOut: want},
		{name: "equal but for transition times: no-op, times kept",
			cur:         []metav1.Condition{cond(acc, "True", "Accepted", "in force", 2, t0), cond(part, "False", "FullyEnforced", "ok", 2, t0)},
			wantChanged: false,
			wantOut:     []metav1.Condition{cond(acc, "True", "Accepted", "in force", 2, t0), cond(part, "False", "FullyEnforced", "ok", 2, t0)}},
		{name: "message changed, status not: time kept",
			cur:         []metav1.Condition{cond(acc, "True", "Accepted", "in force", 2, t0), cond(part, "False", "FullyEnforced", "old", 1, t0)},
			wantChanged: true,
			wantOut:     []metav1.Condition{cond(acc, "True", "Accepted", "in force", 2, t0), cond(part, "False", "FullyEnforced", "ok", 2, t0)}},
		{name: "status flipped: new time",
			cur:         []metav1.Condition{cond(acc, "False", "Malformed", "x", 1, t0), cond(part, "False", "FullyEnforced", "ok", 2, t0)},
			wantChanged: true,
			wantOut:     []metav1.Condition{cond(acc, "True", "Accepted", "in force", 2, t1), cond(part, "False", "FullyEnforced", "ok", 2, t0)}},
		{name: "foreign conditions kept in place, duplicates of ours dropped",
			cur: []metav1.Condition{cond("Audited", "True", "Tool", "x", 1, t0), cond(acc, "True", "Accepted", "in force", 2, t0),
				cond(acc, "False", "Old", "x", 1, t0), cond(part, "False", "FullyEnforced", "ok", 2, t0)},
			wantChanged: true,
			wantOut: []metav1.Condition{cond("Audited", "True", "Tool", "x", 1, t0), cond(acc, "True", "Accepted", "in force", 2, t0),
				cond(part, "False", "FullyEnforced", "ok", 2, t0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, changed := mergeConditions(tc.cur, want)
			if changed != tc.wantChanged || !reflect.DeepEqual(out, tc.wantOut) {
				t.Fatalf("changed=%v out=%+v\nwant changed=%v out=%+v", changed, out, tc.wantChanged, tc.wantOut)
			}
		})
	}
}

// TestStatusPatchNoOpWhenEqual: what another node wrote (other clock) is
// left alone; a wrong observedGeneration or an undecodable entry is
// rewritten.
func TestStatusPatchNoOpWhenEqual(t *testing.T) {
	base := `
apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {namespace: shop, name: p, uid: u1, resourceVersion: "4", generation: 2}
spec: {}
`
	d := desired{uid: "u1", generation: 2, conds: []metav1.Condition{
		cond(v1alpha1.ConditionAccepted, "True", "Accepted", "in force", 2, time.Now()),
	}}
	written := base + `status:
  observedGeneration: 2
  conditions:
  - {type: Accepted, status: "True", reason: Accepted, message: in force, observedGeneration: 2, lastTransitionTime: "2020-01-01T00:00:00Z"}
`
	if p, err := statusPatch(obj(t, written), d); err != nil || p != nil {
		t.Fatalf("equal status: patch %s, %v", p, err)
	}
	for name, y := range map[string]string{
		"no status":             base,
		"old observed":          strings.Replace(written, "observedGeneration: 2\n  conditions", "observedGeneration: 1\n  conditions", 1),
		"undecodable condition": written + "  - 5\n",
	} {
		if p, err := statusPatch(obj(t, y), d); err != nil || p == nil {
			t.Errorf("%s: no patch (%v)", name, err)
		}
	}
}

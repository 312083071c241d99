package policies

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/ambit-mesh/ambit/node/authz"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// FieldManager is the field manager of ambit's status patches.
const FieldManager = "ambit-node"

// desired is what one ambit object's status should say, from the last
// apply.
type desired struct {
	uid        types.UID
	generation int64
	conds      []metav1.Condition
}

// conditionsFor renders a report, or a conversion problem, as the two
// status conditions. Everything in them is derived from the object and the
// policy set, never from the node, so every node computes the same thing
// (LastTransitionTime aside, which mergeConditions keeps as found when the
// status does not change).
func conditionsFor(rep authz.PolicyReport, p *conversionProblem, generation int64, now metav1.Time) []metav1.Condition {
	if p == nil {
		return rep.Conditions(now)
	}
	msg := truncate(p.String(), 32*1024)
	return []metav1.Condition{
		{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionFalse, ObservedGeneration: generation,
			LastTransitionTime: now, Reason: p.Reason, Message: msg},
		{Type: v1alpha1.ConditionPartiallyEnforced, Status: metav1.ConditionTrue, ObservedGeneration: generation,
			LastTransitionTime: now, Reason: p.Reason, Message: msg},
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// currentStatus reads status.observedGeneration and status.conditions of an
// object. Entries that do not decode as a metav1.Condition are dropped (a
// patch then rewrites the list without them).
func currentStatus(u *unstructured.Unstructured) (observed int64, conds []metav1.Condition, clean bool) {
	clean = true
	if g, found, err := unstructured.NestedInt64(u.Object, "status", "observedGeneration"); err == nil && found {
		observed = g
	} else if err != nil {
		clean = false
	}
	list, found, err := unstructured.NestedSlice(u.Object, "status", "conditions")
	if err != nil {
		return observed, nil, false
	}
	if !found {
		return observed, nil, clean
	}
	for _, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			clean = false
			continue
		}
		var c metav1.Condition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &c); err != nil || c.Type == "" {
			clean = false
			continue
		}
		conds = append(conds, c)
	}
	return observed, conds, clean
}

// mergeConditions returns the condition list the object should carry: the
// current list with ambit's condition types replaced by want. A condition
// whose status did not change keeps its LastTransitionTime (as
// meta.SetStatusCondition does), so two nodes with different clocks agree.
// changed is false when the result equals the current list, which is what
// makes a status write a no-op on every node but the first.
func mergeConditions(cur, want []metav1.Condition) (out []metav1.Condition, changed bool) {
	out = make([]metav1.Condition, 0, len(cur)+len(want))
	wanted := map[string]metav1.Condition{}
	for _, w := range want {
		wanted[w.Type] = w
	}
	seen := map[string]bool{}
	for _, c := range cur {
		w, ours := wanted[c.Type]
		if !ours {
			out = append(out, c)
			continue
		}
		if seen[c.Type] { // a duplicate of one of our types: drop it
			changed = true
			continue
		}
		seen[c.Type] = true
		if c.Status == w.Status {
			w.LastTransitionTime = c.LastTransitionTime
		}
		if c.Status != w.Status || c.Reason != w.Reason || c.Message != w.Message ||
			c.ObservedGeneration != w.ObservedGeneration || !c.LastTransitionTime.Equal(&w.LastTransitionTime) {
			changed = true
		}
		out = append(out, w)
	}
	for _, w := range want {
		if !seen[w.Type] {
			out = append(out, w)
			changed = true
		}
	}
	return out, changed
}

// statusPatch returns the JSON merge patch that makes u's status say d,
// or nil when it already does. The patch carries u's resourceVersion, so
// it fails with a conflict if the object changed since it was read (then
// the watch delivers the newer object and the comparison runs again).
func statusPatch(u *unstructured.Unstructured, d desired) ([]byte, error) {
	observed, cur, clean := currentStatus(u)
	conds, changed := mergeConditions(cur, d.conds)
	if !changed && clean && observed == d.generation {
		return nil, nil
	}
	patch := map[string]any{
		"metadata": map[string]any{"resourceVersion": u.GetResourceVersion(), "uid": string(u.GetUID())},
		"status":   map[string]any{"observedGeneration": d.generation, "conditions": conds},
	}
	return json.Marshal(patch)
}

// patcher writes one status patch (the dynamic client in production, a
// recorder in tests).
type patcher interface {
	PatchStatus(ctx context.Context, k *kindWatch, namespace, name string, patch []byte) error
}

// writeStatuses patches every object of the ambit kinds whose status
// differs from what the last apply computed. Objects whose generation or
// UID differs from the one the reports were computed for are skipped: an
// apply is pending for them and will schedule another pass.
func (w *Watcher) writeStatuses(ctx context.Context) {
	w.mu.Lock()
	want := w.desired
	kinds := w.ownKinds()
	w.mu.Unlock()
	retry := false
	for _, k := range kinds {
		for _, o := range k.list() {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			key := objKey{kind: k.kind, namespace: u.GetNamespace(), name: u.GetName()}
			d, ok := want[key]
			if !ok || d.uid != u.GetUID() || d.generation != u.GetGeneration() {
				continue
			}
			patch, err := statusPatch(u, d)
			if err != nil {
				w.log.Error("cannot render status patch", "kind", k.kind, "policy", key.String(), "err", err)
				continue
			}
			if patch == nil {
				continue
			}
			err = w.patch.PatchStatus(ctx, k, u.GetNamespace(), u.GetName(), patch)
			switch {
			case err == nil:
				w.stats.statusWrites.Add(1)
				w.log.Debug("status written", "kind", k.kind, "policy", key.String())
			case apierrors.IsConflict(err):
				// Another node (or the user) wrote first: the watch will
				// bring the new version and the next pass compares again.
				w.stats.statusConflicts.Add(1)
				w.log.Debug("status write conflict; will compare again", "kind", k.kind, "policy", key.String())
			case apierrors.IsNotFound(err):
			default:
				w.stats.statusErrors.Add(1)
				retry = true
				w.log.Warn("cannot write policy status", "kind", k.kind, "policy", key.String(), "err", err)
			}
		}
	}
	if retry {
		w.statusRetry()
	}
}

type objKey struct {
	kind      kind
	istio     bool
	namespace string
	name      string
}

func (k objKey) String() string { return fmt.Sprintf("%s/%s", k.namespace, k.name) }

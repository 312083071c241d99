package policies

import (
	"cmp"
	"slices"
	"time"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/ambit-mesh/ambit/node/authz"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// origin ties an Engine input (or a problem-only object) back to the
// object it came from.
type origin struct {
	key        objKey
	uid        types.UID
	generation int64
	problem    *conversionProblem
	input      bool // passed to Engine.Update
	report     int  // index into Engine.Update's reports, -1 if not passed
}

// item is an object with the metadata apply reads, taken from the
// metadata map once (each accessor of Unstructured is a nested lookup).
type item struct {
	ns, name, rv string
	uid          types.UID
	generation   int64
	u            *unstructured.Unstructured
}

func itemOf(u *unstructured.Unstructured) item {
	it := item{u: u}
	m, _ := u.Object["metadata"].(map[string]any)
	it.ns, _ = m["namespace"].(string)
	it.name, _ = m["name"].(string)
	it.rv, _ = m["resourceVersion"].(string)
	uid, _ := m["uid"].(string)
	it.uid = types.UID(uid)
	it.generation, _ = m["generation"].(int64) // as GetGeneration
	return it
}

// apply converts every object of every store, hands the complete set to the
// Engine, rechecks live connections and computes the statuses.
//
// The first apply waits until every informer has synced and, with the
// Istio switch, until discovery has succeeded once and the Istio informers
// it started have synced: a partial set could admit what the full one
// denies, and until the first apply the daemon is not ready. The sync
// goroutines and discovery kick it. Later, an informer that is not synced
// yet (Istio's, found by a later discovery) is left out until it is, so a
// slow or forbidden Istio list never holds back ambit's own policies.
func (w *Watcher) apply() {
	w.mu.Lock()
	all := slices.Clone(w.kinds)
	first := !w.applied
	istioPending := w.cfg.Istio && !w.istioChecked
	w.mu.Unlock()
	kinds := make([]*kindWatch, 0, len(all))
	for _, k := range all {
		if k.synced() {
			kinds = append(kinds, k)
		} else if first {
			return
		}
	}
	if first && istioPending {
		return
	}
	start := time.Now()

	w.mu.Lock()
	prev := w.memo
	w.mu.Unlock()
	memo := make(map[objKey]memoEntry, len(prev))
	objects := map[string]int{}
	var (
		aps       []*v1alpha1.AuthorizationPolicy
		pas       []*v1alpha1.PeerAuthentication
		apOrigins []origin
		paOrigins []origin
		malformed []MalformedObject
	)
	for _, k := range kinds {
		items := k.list()
		objects[k.name] = len(items)
		// Namespace and name read once: each is a nested map lookup.
		us := make([]item, 0, len(items))
		for _, o := range items {
			if u, ok := o.(*unstructured.Unstructured); ok {
				us = append(us, itemOf(u))
			}
		}
		slices.SortFunc(us, func(a, b item) int {
			return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name))
		})
		for _, it := range us {
			u := it.u
			key := objKey{kind: k.kind, istio: k.istio, namespace: it.ns, name: it.name}
			e, ok := prev[key]
			if !ok || e.uid != it.uid || e.rv != it.rv || it.rv == "" {
				e = memoEntry{uid: it.uid, rv: it.rv, res: w.convert(k, u)}
			}
			memo[key] = e
			o := origin{key: key, uid: it.uid, generation: it.generation, problem: e.res.problem, report: -1}
			if p := e.res.problem; p != nil {
				malformed = append(malformed, MalformedObject{Resource: k.name, Namespace: key.namespace, Name: key.name,
					Reason: p.Reason, Message: p.String()})
			}
			switch {
			case e.res.ap != nil:
				o.input = true
				aps = append(aps, e.res.ap)
				apOrigins = append(apOrigins, o)
			case e.res.pa != nil:
				o.input = true
				pas = append(pas, e.res.pa)
				paOrigins = append(paOrigins, o)
			default:
				apOrigins = append(apOrigins, o) // problem only: status, no Engine input
			}
		}
	}

	reports := w.cfg.Engine.Update(aps, pas)
	closed := 0
	if w.cfg.Live != nil {
		closed = w.cfg.Live.Recheck(w.cfg.Engine)
		w.stats.closed.Add(uint64(closed))
	}
	elapsed := time.Since(start)
	w.stats.applies.Add(1)
	if closed > 0 {
		w.log.Info("policies applied; closed live connections now denied", "closed", closed,
			"authorizationPolicies", len(aps), "peerAuthentications", len(pas), "took", elapsed)
	} else {
		w.log.Debug("policies applied", "authorizationPolicies", len(aps), "peerAuthentications", len(pas), "took", elapsed)
	}

	// Engine reports come in input order, AuthorizationPolicies first;
	// problem-only origins had no input.
	next := 0
	for _, list := range [][]origin{apOrigins, paOrigins} {
		for j := range list {
			if list[j].input {
				list[j].report = next
				next++
			}
		}
	}

	now := metav1.NewTime(w.cfg.Now())
	want := make(map[objKey]desired, len(apOrigins)+len(paOrigins))
	for _, list := range [][]origin{apOrigins, paOrigins} {
		if !w.cfg.WriteStatus {
			break
		}
		for _, o := range list {
			if o.key.istio {
				continue
			}
			var rep authz.PolicyReport
			if o.report >= 0 && o.report < len(reports) {
				rep = reports[o.report]
			}
			want[o.key] = desired{uid: o.uid, generation: o.generation, conds: conditionsFor(rep, o.problem, o.generation, now)}
		}
	}

	w.mu.Lock()
	w.memo = memo
	w.desired = want
	w.applied = true
	w.lastApply = w.cfg.Now()
	w.applyDur = elapsed
	w.objects = objects
	w.malformed = malformed
	w.mu.Unlock()
	if w.cfg.WriteStatus {
		w.statusKick.Kick()
	}
}

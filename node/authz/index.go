package authz

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
)

// The index. A decision must cost little even with a thousand policies
// applying to one workload, so nothing proportional to the number of
// policies happens per connection:
//
//  1. Which policies apply to a workload (namespace, root namespace,
//     selectors) is computed once per workload and snapshot and cached in a
//     view keyed by {namespace, pod name}; the labels are re-checked on every
//     hit, so a relabelled pod gets a fresh view.
//  2. Within a view, each action's rules are filed by the most selective
//     exact attribute every match needs: the peer principal, else the peer
//     namespace, else the destination port. A decision looks up the
//     request's principal, namespace and port and evaluates only those
//     rules plus the ones no key describes (the "rest": patterns, IP
//     blocks, empty rules). Policies written with exact principals,
//     namespaces, service accounts or ports, the common case, therefore
//     cost one map lookup each, whatever their number.

type ruleRef struct {
	p *cPolicy
	r *cRule
}

// group is one action's rules in a view.
type group struct {
	policies    int // policies of this action that apply (rules or not)
	byPrincipal map[string][]ruleRef
	byNS        map[string][]ruleRef
	byPort      map[uint16][]ruleRef
	rest        []ruleRef // in policy order
}

func (g *group) add(p *cPolicy) {
	g.policies++
	for _, r := range p.rules {
		ref := ruleRef{p, r}
		switch {
		case r.principalKeys != nil:
			if g.byPrincipal == nil {
				g.byPrincipal = map[string][]ruleRef{}
			}
			for _, k := range r.principalKeys {
				g.byPrincipal[k] = append(g.byPrincipal[k], ref)
			}
		case r.nsKeys != nil:
			if g.byNS == nil {
				g.byNS = map[string][]ruleRef{}
			}
			for _, k := range r.nsKeys {
				g.byNS[k] = append(g.byNS[k], ref)
			}
		case r.portKeys != nil:
			if g.byPort == nil {
				g.byPort = map[uint16][]ruleRef{}
			}
			for _, k := range r.portKeys {
				g.byPort[k] = append(g.byPort[k], ref)
			}
		default:
			g.rest = append(g.rest, ref)
		}
	}
}

// first returns the matching policy with the lowest order, or nil.
func (g *group) first(a *attrs) *cPolicy {
	var best *cPolicy
	consider := func(refs []ruleRef) {
		for _, ref := range refs {
			if best != nil && ref.p.ord >= best.ord {
				continue
			}
			if ref.r.match(a) {
				best = ref.p
			}
		}
	}
	if a.principal != "" && g.byPrincipal != nil {
		consider(g.byPrincipal[a.principal])
	}
	if a.ns != "" && g.byNS != nil {
		consider(g.byNS[a.ns])
	}
	if g.byPort != nil {
		consider(g.byPort[a.dstPort])
	}
	for _, ref := range g.rest {
		if best != nil && ref.p.ord >= best.ord {
			break // rest is in policy order
		}
		if ref.r.match(a) {
			best = ref.p
			break
		}
	}
	return best
}

// all returns the keys of every matching policy, in policy order.
func (g *group) all(a *attrs) []string {
	var hit []*cPolicy
	consider := func(refs []ruleRef) {
		for _, ref := range refs {
			if containsPolicy(hit, ref.p) {
				continue
			}
			if ref.r.match(a) {
				hit = append(hit, ref.p)
			}
		}
	}
	if a.principal != "" && g.byPrincipal != nil {
		consider(g.byPrincipal[a.principal])
	}
	if a.ns != "" && g.byNS != nil {
		consider(g.byNS[a.ns])
	}
	if g.byPort != nil {
		consider(g.byPort[a.dstPort])
	}
	consider(g.rest)
	if len(hit) == 0 {
		return nil
	}
	sortPolicies(hit)
	keys := make([]string, len(hit))
	for i, p := range hit {
		keys[i] = p.key
	}
	return keys
}

func containsPolicy(ps []*cPolicy, p *cPolicy) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

func sortPolicies(ps []*cPolicy) {
	for i := 1; i < len(ps); i++ { // few elements: insertion sort
		for j := i; j > 0 && ps[j].ord < ps[j-1].ord; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}

// view is what applies to one workload in one snapshot.
type view struct {
	labels             map[string]string
	deny, allow, audit group
	pa                 resolvedPA
}

func (v *view) labelsEqual(l map[string]string) bool {
	if len(v.labels) != len(l) {
		return false
	}
	for k, x := range l {
		if y, ok := v.labels[k]; !ok || x != y {
			return false
		}
	}
	return true
}

// nsPolicies are the AuthorizationPolicies of one namespace.
type nsPolicies struct {
	all []*cPolicy // in policy order
}

type viewKey struct{ ns, name string }

// snapshot is one immutable compiled state; Update swaps it atomically.
type snapshot struct {
	generation uint64
	rootNS     string
	byNS       map[string]*nsPolicies
	pa         paIndex
	maxViews   int32

	views  sync.Map // viewKey -> *view
	nviews atomic.Int32
}

func (s *snapshot) view(w *Workload) *view {
	if w.Name == "" {
		return s.buildView(w)
	}
	k := viewKey{w.Namespace, w.Name}
	if v, ok := s.views.Load(k); ok {
		if v := v.(*view); v.labelsEqual(w.Labels) {
			return v
		}
		v := s.buildView(w)
		s.views.Store(k, v)
		return v
	}
	v := s.buildView(w)
	if s.nviews.Load() < s.maxViews {
		if _, loaded := s.views.LoadOrStore(k, v); !loaded {
			s.nviews.Add(1)
		}
	}
	return v
}

func (s *snapshot) buildView(w *Workload) *view {
	v := &view{labels: make(map[string]string, len(w.Labels))}
	for k, x := range w.Labels {
		v.labels[k] = x
	}
	add := func(ps *nsPolicies) {
		if ps == nil {
			return
		}
		for _, p := range ps.all {
			if !p.applies || !selectorMatches(p.selector, w.Labels) {
				continue
			}
			switch p.action {
			case v1alpha1.ActionDeny:
				v.deny.add(p)
			case v1alpha1.ActionAudit:
				v.audit.add(p)
			default:
				v.allow.add(p)
			}
		}
	}
	// Root namespace policies apply mesh-wide (their selectors too); the
	// workload's own namespace adds its policies. The rest lists must be in
	// policy order (group.first stops early on it): each namespace's list
	// is, the concatenation of two is re-sorted.
	add(s.byNS[s.rootNS])
	if w.Namespace != s.rootNS {
		add(s.byNS[w.Namespace])
		for _, g := range []*group{&v.deny, &v.allow, &v.audit} {
			sortRefs(g.rest)
		}
	}
	v.pa = s.pa.resolve(w.Namespace, w.Labels)
	return v
}

func sortRefs(refs []ruleRef) {
	slices.SortFunc(refs, func(a, b ruleRef) int { return a.p.ord - b.p.ord })
}

package authz

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
)

// The index. A decision must cost little even with a thousand policies
// applying to one workload, so nothing proportional to the number of
// policies happens per connection in the common case:
//
//  1. Which policies apply to a workload (namespace, root namespace,
//     selectors) is computed once per snapshot and label set and cached in
//     a view. Views are found by {namespace, pod name} (labels re-checked on
//     every hit, so a relabelled pod gets a fresh view) and shared between
//     pods with the same namespace and labels (the replicas of a
//     Deployment), so an Update costs one view build per distinct label
//     set, lazily.
//  2. Within a view, each action's rules are filed by an attribute every
//     match needs: the peer principal (exact, prefix or suffix pattern),
//     else the peer namespace (same, or serviceAccounts), else the exact
//     destination port, else the source IP block. A decision probes the
//     request's principal and namespace (once exact, once per prefix or
//     suffix length in use), its port, and its masked source address per
//     prefix length in use, and evaluates only the rules found there plus
//     the rest (presence patterns, not-only fields, empty rules), which it
//     scans. Policies written the usual way therefore cost a few map
//     lookups whatever their number; the scan is the worst case
//     (BenchmarkDecide/unindexed-1000).

type ruleRef struct {
	p   *cPolicy
	r   *cRule
	ord int32 // the policy's position in the snapshot's (namespace, name) order
}

// group is one action's rules in a view.
type group struct {
	policies    int // policies of this action that apply (with rules or not)
	byPrincipal strIndex
	byNS        strIndex
	byPort      map[uint16][]ruleRef
	byIP        map[netip.Prefix][]ruleRef
	ipBits4     []int // prefix lengths present in byIP, IPv4
	ipBits6     []int
	rest        []ruleRef // in policy order
}

func addRef[K comparable](m *map[K][]ruleRef, k K, ref ruleRef) {
	if *m == nil {
		*m = map[K][]ruleRef{}
	}
	(*m)[k] = append((*m)[k], ref)
}

func (g *group) add(p *cPolicy, ord int32) {
	g.policies++
	for _, r := range p.rules {
		ref := ruleRef{p, r, ord}
		switch {
		case r.principalKeys != nil:
			g.byPrincipal.add(r.principalKeys, ref)
		case r.nsKeys != nil:
			g.byNS.add(r.nsKeys, ref)
		case r.portKeys != nil:
			for _, k := range r.portKeys {
				addRef(&g.byPort, k, ref)
			}
		case r.ipKeys != nil:
			for _, k := range r.ipKeys {
				addRef(&g.byIP, k, ref)
				if k.Addr().Is4() {
					g.ipBits4 = insertBits(g.ipBits4, k.Bits())
				} else {
					g.ipBits6 = insertBits(g.ipBits6, k.Bits())
				}
			}
		default:
			g.rest = append(g.rest, ref)
		}
	}
}

func insertBits(bits []int, b int) []int {
	if i, found := slices.BinarySearch(bits, b); !found {
		bits = slices.Insert(bits, i, b)
	}
	return bits
}

// first returns a matching policy, or nil. The families are consulted in a
// fixed order (principal, namespace, port, IP block, rest), each in policy
// order, so the answer is deterministic for a given policy set.
func (g *group) first(a *attrs) *cPolicy {
	var found *cPolicy
	try := func(refs []ruleRef) bool {
		found = firstIn(refs, a)
		return found != nil
	}
	if g.byPrincipal.visit(a.principal, try) || g.byNS.visit(a.ns, try) {
		return found
	}
	if g.byPort != nil {
		if p := firstIn(g.byPort[a.dstPort], a); p != nil {
			return p
		}
	}
	if g.byIP != nil && a.srcIP.IsValid() {
		bits := g.ipBits6
		if a.srcIP.Is4() {
			bits = g.ipBits4
		}
		for _, b := range bits {
			pfx, err := a.srcIP.Prefix(b)
			if err != nil {
				continue
			}
			if p := firstIn(g.byIP[pfx], a); p != nil {
				return p
			}
		}
	}
	return firstIn(g.rest, a)
}

func firstIn(refs []ruleRef, a *attrs) *cPolicy {
	for i := range refs {
		if refs[i].r.match(a) {
			return refs[i].p
		}
	}
	return nil
}

// all returns the keys of every matching policy, in policy order.
func (g *group) all(a *attrs) []string {
	var hit []ruleRef
	consider := func(refs []ruleRef) {
		for _, ref := range refs {
			if slices.ContainsFunc(hit, func(h ruleRef) bool { return h.p == ref.p }) {
				continue
			}
			if ref.r.match(a) {
				hit = append(hit, ref)
			}
		}
	}
	visitAll := func(refs []ruleRef) bool {
		consider(refs)
		return false
	}
	g.byPrincipal.visit(a.principal, visitAll)
	g.byNS.visit(a.ns, visitAll)
	if g.byPort != nil {
		consider(g.byPort[a.dstPort])
	}
	if g.byIP != nil && a.srcIP.IsValid() {
		bits := g.ipBits6
		if a.srcIP.Is4() {
			bits = g.ipBits4
		}
		for _, b := range bits {
			if pfx, err := a.srcIP.Prefix(b); err == nil {
				consider(g.byIP[pfx])
			}
		}
	}
	consider(g.rest)
	if len(hit) == 0 {
		return nil
	}
	slices.SortFunc(hit, func(x, y ruleRef) int { return int(x.ord - y.ord) })
	keys := make([]string, len(hit))
	for i, h := range hit {
		keys[i] = h.p.key
	}
	return keys
}

// view is what applies to one workload (label set) in one snapshot.
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

// nsPolicies are the AuthorizationPolicies of one namespace, in policy
// order, with their positions in the snapshot's order.
type nsPolicies struct {
	all  []*cPolicy
	ords []int32
}

type viewKey struct{ ns, name string }

// snapshot is one immutable compiled state; Update swaps it atomically.
// Only its view caches change, and those are concurrency-safe.
type snapshot struct {
	generation uint64
	rootNS     string
	byNS       map[string]*nsPolicies
	pa         paIndex
	maxViews   int32

	views  sync.Map // viewKey -> *view
	shared sync.Map // labelSetKey -> *view
	nviews atomic.Int32
}

func (s *snapshot) view(w *Workload) *view {
	if w.Name == "" {
		return s.sharedView(w)
	}
	k := viewKey{w.Namespace, w.Name}
	if v, ok := s.views.Load(k); ok {
		if v := v.(*view); v.labelsEqual(w.Labels) {
			return v
		}
		v := s.sharedView(w)
		s.views.Store(k, v)
		return v
	}
	v := s.sharedView(w)
	if s.nviews.Load() < s.maxViews {
		if _, loaded := s.views.LoadOrStore(k, v); !loaded {
			s.nviews.Add(1)
		}
	}
	return v
}

// sharedView finds or builds the view of a namespace and label set.
func (s *snapshot) sharedView(w *Workload) *view {
	k := labelSetKey(w.Namespace, w.Labels)
	if v, ok := s.shared.Load(k); ok {
		return v.(*view)
	}
	v := s.buildView(w)
	if s.nviews.Load() < s.maxViews {
		if _, loaded := s.shared.LoadOrStore(k, v); !loaded {
			s.nviews.Add(1)
		}
	}
	return v
}

// labelSetKey is namespace and sorted labels joined by NUL bytes, which no
// label key or value may contain.
func labelSetKey(ns string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(ns)
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(labels[k])
	}
	return b.String()
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
		for i, p := range ps.all {
			if !p.applies || !selectorMatches(p.selector, w.Labels) {
				continue
			}
			switch p.action {
			case v1alpha1.ActionDeny:
				v.deny.add(p, ps.ords[i])
			case v1alpha1.ActionAudit:
				v.audit.add(p, ps.ords[i])
			default:
				v.allow.add(p, ps.ords[i])
			}
		}
	}
	// Root namespace policies apply mesh-wide (their selectors too); the
	// workload's own namespace adds its policies.
	add(s.byNS[s.rootNS])
	if w.Namespace != s.rootNS {
		add(s.byNS[w.Namespace])
		for _, g := range []*group{&v.deny, &v.allow, &v.audit} {
			slices.SortStableFunc(g.rest, func(a, b ruleRef) int { return int(a.ord - b.ord) })
		}
	}
	v.pa = s.pa.resolve(w.Namespace, w.Labels)
	return v
}

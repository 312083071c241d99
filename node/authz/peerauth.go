package authz

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
)

// PeerAuthentication resolution.
//
// Scope and precedence (Istio's, see the PeerAuthentication reference,
// https://istio.io/latest/docs/reference/config/security/peer_authentication/):
// a policy in the root namespace without selector covers the mesh; one in
// another namespace without selector covers that namespace; one with a
// selector covers the matching pods of its own namespace (the root namespace
// included: a root selector does not reach other namespaces). The narrowest
// scope that sets a mode wins; UNSET inherits from the next wider scope; with
// nothing set the mode is PERMISSIVE. Several policies at one scope: the
// oldest wins (creation time, then name), the others are reported
// superseded.
//
// portLevelMtls is honoured only on selector policies (Istio rejects it
// elsewhere). Each listed port gets its own mode, UNSET meaning the
// workload's effective mode; every other port keeps the workload's mode.
// This is per-port replacement, deliberately not a rule list: Istio's
// ambient translation of PeerAuthentication into ztunnel DENY rules once
// emitted "no principal" and "not these ports" as two ORed rules, so STRICT
// with a PERMISSIVE port 8080 denied even mTLS traffic to every other port
// (istio/ztunnel#792, fixed to AND them by istio/istio#49131).
type cPeerAuth struct {
	key      string
	ns       string
	selector map[string]string
	mode     v1alpha1.MTLSMode            // UNSET when absent
	ports    map[uint16]v1alpha1.MTLSMode // only for selector policies
	created  time.Time
	name     string
}

func normalizeMode(m v1alpha1.MTLSMode) (v1alpha1.MTLSMode, error) {
	switch m {
	case "", v1alpha1.MTLSUnset:
		return v1alpha1.MTLSUnset, nil
	case v1alpha1.MTLSDisable, v1alpha1.MTLSPermissive, v1alpha1.MTLSStrict:
		return m, nil
	default:
		// Unknown: fail closed.
		return v1alpha1.MTLSStrict, fmt.Errorf("%q: %w", m, ErrBadMTLSMode)
	}
}

func compilePeerAuthentication(p *v1alpha1.PeerAuthentication) (*cPeerAuth, PolicyReport) {
	rep := PolicyReport{
		Kind: "PeerAuthentication", Namespace: p.Namespace, Name: p.Name,
		Generation: p.Generation, Accepted: true, Reason: ReasonAccepted,
	}
	c := &cPeerAuth{
		key: p.Namespace + "/" + p.Name, ns: p.Namespace, name: p.Name,
		mode: v1alpha1.MTLSUnset, created: p.CreationTimestamp.Time,
	}
	if p.Spec.Selector != nil && len(p.Spec.Selector.MatchLabels) > 0 {
		c.selector = maps.Clone(p.Spec.Selector.MatchLabels)
	}
	if p.Spec.Mtls != nil {
		m, err := normalizeMode(p.Spec.Mtls.Mode)
		if err != nil {
			rep.Issues = append(rep.Issues, fmt.Sprintf("mtls.mode: %v; enforced as STRICT (fail closed)", err))
		}
		c.mode = m
	}
	if len(p.Spec.PortLevelMtls) > 0 && c.selector == nil {
		rep.Issues = append(rep.Issues, "portLevelMtls ignored: it needs a selector with matchLabels")
	}
	if len(p.Spec.PortLevelMtls) > 0 && c.selector != nil {
		c.ports = make(map[uint16]v1alpha1.MTLSMode, len(p.Spec.PortLevelMtls))
		for _, k := range slices.Sorted(maps.Keys(p.Spec.PortLevelMtls)) {
			port, err := strconv.ParseUint(k, 10, 16)
			if err != nil || port == 0 {
				rep.Issues = append(rep.Issues, fmt.Sprintf("portLevelMtls[%q]: not a port 1-65535; ignored", k))
				continue
			}
			m, err := normalizeMode(p.Spec.PortLevelMtls[k].Mode)
			if err != nil {
				rep.Issues = append(rep.Issues, fmt.Sprintf("portLevelMtls[%q].mode: %v; enforced as STRICT (fail closed)", k, err))
			}
			c.ports[uint16(port)] = m
		}
	}
	return c, rep
}

// olderFirst orders policies of one scope: the oldest wins.
func olderFirst(a, b *cPeerAuth) int {
	if c := a.created.Compare(b.created); c != 0 {
		return c
	}
	return compareStrings(a.name, b.name)
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// paIndex holds the PeerAuthentications of one snapshot by scope.
type paIndex struct {
	mesh     *cPeerAuth
	byNS     map[string]*cPeerAuth   // namespace-wide, root excluded
	selected map[string][]*cPeerAuth // oldest first
}

// buildPAIndex files the policies by scope and marks the losers of each
// namespace-wide (or mesh) scope in their reports (reports[i] belongs to
// pas[i]).
func buildPAIndex(pas []*cPeerAuth, reports []*PolicyReport, rootNS string) paIndex {
	idx := paIndex{byNS: map[string]*cPeerAuth{}, selected: map[string][]*cPeerAuth{}}
	wide := map[string][]int{} // namespace -> indexes of its selector-less policies
	for i, pa := range pas {
		if pa.selector != nil {
			idx.selected[pa.ns] = append(idx.selected[pa.ns], pa)
		} else {
			wide[pa.ns] = append(wide[pa.ns], i)
		}
	}
	for ns, list := range wide {
		slices.SortFunc(list, func(a, b int) int { return olderFirst(pas[a], pas[b]) })
		won := pas[list[0]]
		for _, i := range list[1:] {
			reports[i].Accepted = false
			reports[i].Reason = ReasonSuperseded
			reports[i].Message = fmt.Sprintf("the older policy %s covers the same scope and wins", won.key)
		}
		if ns == rootNS {
			idx.mesh = won
		} else {
			idx.byNS[ns] = won
		}
	}
	for _, list := range idx.selected {
		slices.SortFunc(list, olderFirst)
	}
	return idx
}

// modeSource is a resolved mode and the policy that set it.
type modeSource struct {
	mode   v1alpha1.MTLSMode
	policy string
}

// resolvedPA is the effective PeerAuthentication of one workload.
type resolvedPA struct {
	workload modeSource
	ports    map[uint16]modeSource
}

func (r *resolvedPA) forPort(p uint16) modeSource {
	if m, ok := r.ports[p]; ok {
		return m
	}
	return r.workload
}

func (idx *paIndex) resolve(ns string, labels map[string]string) resolvedPA {
	eff := modeSource{mode: v1alpha1.MTLSPermissive}
	if idx.mesh != nil && idx.mesh.mode != v1alpha1.MTLSUnset {
		eff = modeSource{idx.mesh.mode, idx.mesh.key}
	}
	if p := idx.byNS[ns]; p != nil && p.mode != v1alpha1.MTLSUnset {
		eff = modeSource{p.mode, p.key}
	}
	var wl *cPeerAuth
	for _, p := range idx.selected[ns] {
		if selectorMatches(p.selector, labels) {
			wl = p
			break
		}
	}
	if wl == nil {
		return resolvedPA{workload: eff}
	}
	if wl.mode != v1alpha1.MTLSUnset {
		eff = modeSource{wl.mode, wl.key}
	}
	r := resolvedPA{workload: eff}
	if len(wl.ports) > 0 {
		r.ports = make(map[uint16]modeSource, len(wl.ports))
		for port, m := range wl.ports {
			if m == v1alpha1.MTLSUnset {
				r.ports[port] = eff
			} else {
				r.ports[port] = modeSource{m, wl.key}
			}
		}
	}
	return r
}

func selectorMatches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

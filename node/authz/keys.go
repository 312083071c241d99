package authz

import (
	"net/netip"
	"slices"
)

// Index keys of a compiled rule: which attribute values a request must
// have for the rule to possibly match (see index.go for how they are used).

// strKeys are the patterns of one string attribute that a rule needs one of:
// exact values, prefixes ("abc*") and suffixes ("*abc"). Presence ("*")
// cannot be keyed.
type strKeys struct {
	exact, prefix, suffix []string
}

func (k *strKeys) add(p pattern) bool {
	switch p.kind {
	case matchExact:
		k.exact = append(k.exact, p.s)
	case matchPrefix:
		k.prefix = append(k.prefix, p.s)
	case matchSuffix:
		k.suffix = append(k.suffix, p.s)
	default:
		return false
	}
	return true
}

func (k *strKeys) compact() *strKeys {
	for _, l := range []*[]string{&k.exact, &k.prefix, &k.suffix} {
		slices.Sort(*l)
		*l = slices.Compact(*l)
	}
	return k
}

// setIndexKeys picks the first family that describes the rule: principal,
// namespace, port, IP block. A family describes it when every entry of
// from (or to, for ports) constrains that attribute positively with
// keyable values, or when one of its when conditions does (conditions are
// ANDed, so any one with values is a requirement).
func (r *cRule) setIndexKeys() {
	if k, ok := r.sourceKeys(func(s *cSource, k *strKeys) bool { return addPatterns(k, s.principals) }); ok {
		r.principalKeys = k
		return
	}
	if k, ok := r.whenStrKeys(condSourcePrincipal); ok {
		r.principalKeys = k
		return
	}
	if k, ok := r.sourceKeys(func(s *cSource, k *strKeys) bool {
		if addPatterns(k, s.namespaces) {
			return true
		}
		if len(s.sas) == 0 {
			return false
		}
		for _, sa := range s.sas {
			k.exact = append(k.exact, sa.ns)
		}
		return true
	}); ok {
		r.nsKeys = k
		return
	}
	if k, ok := r.whenStrKeys(condSourceNamespace); ok {
		r.nsKeys = k
		return
	}
	if ports, ok := r.exactPorts(); ok {
		r.portKeys = ports
		return
	}
	for i := range r.when {
		if c := &r.when[i]; c.key == condDestinationPort && c.hasValues {
			r.portKeys = slices.Compact(slices.Sorted(slices.Values(c.ports)))
			return
		}
	}
	if ips, ok := r.sourceIPs(); ok {
		r.ipKeys = ips
		return
	}
	for i := range r.when {
		if c := &r.when[i]; c.key == condSourceIP && c.hasValues {
			r.ipKeys = compactPrefixes(slices.Clone(c.ips))
			return
		}
	}
}

func (r *cRule) sourceIPs() ([]netip.Prefix, bool) {
	if len(r.from) == 0 {
		return nil, false
	}
	var ips []netip.Prefix
	for i := range r.from {
		if len(r.from[i].ips) == 0 {
			return nil, false
		}
		ips = append(ips, r.from[i].ips...)
	}
	return compactPrefixes(ips), true
}

func compactPrefixes(ips []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ips, func(a, b netip.Prefix) int { return a.Compare(b) })
	return slices.Compact(ips)
}

// whenStrKeys keys the rule by the first condition on key with keyable
// values.
func (r *cRule) whenStrKeys(key condKey) (*strKeys, bool) {
	for i := range r.when {
		c := &r.when[i]
		if c.key != key || !c.hasValues {
			continue
		}
		k := &strKeys{}
		if addPatterns(k, c.strs) {
			return k.compact(), true
		}
	}
	return nil, false
}

// addPatterns adds every pattern of a positive field; false if the field is
// absent or holds a presence pattern (which any value matches).
func addPatterns(k *strKeys, ps []pattern) bool {
	if len(ps) == 0 {
		return false
	}
	mark := [3]int{len(k.exact), len(k.prefix), len(k.suffix)}
	for _, p := range ps {
		if !k.add(p) {
			k.exact, k.prefix, k.suffix = k.exact[:mark[0]], k.prefix[:mark[1]], k.suffix[:mark[2]]
			return false
		}
	}
	return true
}

// sourceKeys unions keys(source) over the rule's sources when every source
// yields keys.
func (r *cRule) sourceKeys(keys func(*cSource, *strKeys) bool) (*strKeys, bool) {
	if len(r.from) == 0 {
		return nil, false
	}
	k := &strKeys{}
	for i := range r.from {
		if !keys(&r.from[i], k) {
			return nil, false
		}
	}
	return k.compact(), true
}

func (r *cRule) exactPorts() ([]uint16, bool) {
	if len(r.to) == 0 {
		return nil, false
	}
	var ports []uint16
	for _, o := range r.to {
		if len(o.ports) == 0 {
			return nil, false
		}
		ports = append(ports, o.ports...)
	}
	slices.Sort(ports)
	return slices.Compact(ports), true
}

// strIndex files rules under exact values, prefixes and suffixes of one
// string attribute. A lookup costs one map probe for the exact value plus
// one per distinct prefix (suffix) length in use that fits the value.
type strIndex struct {
	exact      map[string][]ruleRef
	prefix     map[string][]ruleRef
	suffix     map[string][]ruleRef
	prefixLens []int
	suffixLens []int
}

func (x *strIndex) add(k *strKeys, ref ruleRef) {
	for _, s := range k.exact {
		addRef(&x.exact, s, ref)
	}
	for _, s := range k.prefix {
		addRef(&x.prefix, s, ref)
		x.prefixLens = insertBits(x.prefixLens, len(s))
	}
	for _, s := range k.suffix {
		addRef(&x.suffix, s, ref)
		x.suffixLens = insertBits(x.suffixLens, len(s))
	}
}

// visit calls fn with every candidate list for value v until fn returns
// true. A rule may come up more than once (several of its patterns fit).
func (x *strIndex) visit(v string, fn func([]ruleRef) bool) bool {
	if v == "" {
		return false
	}
	if x.exact != nil {
		if refs, ok := x.exact[v]; ok && fn(refs) {
			return true
		}
	}
	for _, n := range x.prefixLens {
		if n > len(v) {
			break
		}
		if refs, ok := x.prefix[v[:n]]; ok && fn(refs) {
			return true
		}
	}
	for _, n := range x.suffixLens {
		if n > len(v) {
			break
		}
		if refs, ok := x.suffix[v[len(v)-n:]]; ok && fn(refs) {
			return true
		}
	}
	return false
}

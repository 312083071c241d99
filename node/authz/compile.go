package authz

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
)

// cPolicy is a compiled AuthorizationPolicy.
type cPolicy struct {
	key      string // namespace/name
	ns       string
	action   v1alpha1.Action // ALLOW, DENY or AUDIT
	selector map[string]string
	applies  bool // false: attached by targetRef, applies to no workload
	rules    []*cRule
	// A cPolicy is immutable once compiled: snapshots share it.
}

// cRule is a compiled rule: at least one from, at least one to, every when.
// A nil list does not constrain.
type cRule struct {
	from []cSource
	to   []cOperation
	when []cCondition

	// Index keys (see index.go): a request can only match this rule if its
	// principal is in principalKeys, or its namespace in nsKeys, or its
	// port in portKeys, or its source IP in one of ipKeys, whichever family
	// is set. At most one is.
	principalKeys *strKeys
	nsKeys        *strKeys
	portKeys      []uint16
	ipKeys        []netip.Prefix
}

// cSource: every non-nil field must hold.
type cSource struct {
	principals, notPrincipals []pattern
	namespaces, notNamespaces []pattern
	sas, notSAs               []serviceAccount
	ips, notIPs               []netip.Prefix
}

type cOperation struct {
	ports, notPorts []uint16
}

type condKey uint8

const (
	condSourceIP condKey = iota
	condSourceNamespace
	condSourcePrincipal
	condDestinationIP
	condDestinationPort
)

var condKeys = map[string]condKey{
	"source.ip":        condSourceIP,
	"source.namespace": condSourceNamespace,
	"source.principal": condSourcePrincipal,
	"destination.ip":   condDestinationIP,
	"destination.port": condDestinationPort,
}

type cCondition struct {
	key                 condKey
	strs, notStrs       []pattern
	ips, notIPs         []netip.Prefix
	ports, notPorts     []uint16
	hasValues, hasNotVs bool
}

// ruleCompiler compiles one rule. In ALLOW and AUDIT policies anything that
// cannot be enforced drops the whole rule (it can then never match: the
// policy can only allow less). In DENY policies it removes just that field
// or condition, so the rule matches more connections than written (it can
// only deny more). Either way it is recorded as an issue.
type ruleCompiler struct {
	policyNS string
	reduce   bool         // DENY: reduce to the enforceable part
	tds      trustDomains // principals are rewritten for aliases (trustdomain.go)
	issues   []string
	warnings []string
}

// where locates a rule element; its path is built only when an issue
// needs it (compiling a thousand clean policies formats nothing).
type where struct {
	rule int
	part string // "from", "to" or "when"
	idx  int
}

func (w where) path(field string) string {
	s := fmt.Sprintf("rules[%d].%s[%d]", w.rule, w.part, w.idx)
	switch w.part {
	case "from":
		s += ".source"
	case "to":
		s += ".operation"
	}
	return s + field
}

func (c *ruleCompiler) issue(path, format string, args ...any) {
	c.issues = append(c.issues, path+": "+fmt.Sprintf(format, args...))
}

func (c *ruleCompiler) l7(at where, field string, values []string) {
	if len(values) > 0 {
		c.issue(at.path(field), "L7 field, not enforceable at L4")
	}
}

func (c *ruleCompiler) patterns(at where, field string, values []string) []pattern {
	var out []pattern
	for i, v := range values {
		p, err := parsePattern(v)
		if err != nil {
			c.issue(fmt.Sprintf("%s[%d]", at.path(field), i), "%v", err)
			return nil
		}
		out = append(out, p)
	}
	return out
}

// principals compiles principal values, each rewritten for the trust
// domain and its aliases (trustdomain.go). Problems are reported against
// the values as written.
func (c *ruleCompiler) principals(at where, field string, values []string) []pattern {
	var out []pattern
	for i, v := range values {
		if strings.HasPrefix(v, "spiffe://") {
			c.warnings = append(c.warnings, fmt.Sprintf("%s[%d]: %q never matches: principals are written without \"spiffe://\"", at.path(field), i, v))
		}
		p, err := parsePattern(v)
		if err != nil {
			c.issue(fmt.Sprintf("%s[%d]", at.path(field), i), "%v", err)
			return nil
		}
		expanded, foreign := c.tds.expand(v)
		if foreign {
			c.warnings = append(c.warnings, fmt.Sprintf("%s[%d]: %q names a trust domain that is neither %s nor an alias; kept as written (no such peer passes the TLS handshake)", at.path(field), i, v, c.tds[0]))
		}
		if len(expanded) == 1 && expanded[0] == v {
			out = append(out, p)
			continue
		}
		for _, e := range expanded {
			ep, err := parsePattern(e)
			if err != nil { // cannot happen: e is v with another non-empty prefix
				c.issue(fmt.Sprintf("%s[%d]", at.path(field), i), "%v", err)
				return nil
			}
			out = append(out, ep)
		}
	}
	return out
}

func (c *ruleCompiler) ipBlocks(at where, field string, values []string) []netip.Prefix {
	var out []netip.Prefix
	for i, v := range values {
		p, err := parseIPBlock(v)
		if err != nil {
			c.issue(fmt.Sprintf("%s[%d]", at.path(field), i), "%v", err)
			return nil
		}
		out = append(out, p)
	}
	return out
}

func (c *ruleCompiler) ports(at where, field string, values []string) []uint16 {
	var out []uint16
	for i, v := range values {
		p, err := parsePort(v)
		if err != nil {
			c.issue(fmt.Sprintf("%s[%d]", at.path(field), i), "%v", err)
			return nil
		}
		out = append(out, p)
	}
	return out
}

func (c *ruleCompiler) serviceAccounts(at where, field string, values []string) []serviceAccount {
	var out []serviceAccount
	for i, v := range values {
		sa, err := parseServiceAccount(v, c.policyNS)
		if err != nil {
			c.issue(fmt.Sprintf("%s[%d]", at.path(field), i), "%v", err)
			return nil
		}
		out = append(out, sa)
	}
	return out
}

func (c *ruleCompiler) source(at where, s *v1alpha1.Source) cSource {
	if s == nil {
		return cSource{}
	}
	c.l7(at, ".requestPrincipals", s.RequestPrincipals)
	c.l7(at, ".notRequestPrincipals", s.NotRequestPrincipals)
	c.l7(at, ".remoteIpBlocks", s.RemoteIPBlocks)
	c.l7(at, ".notRemoteIpBlocks", s.NotRemoteIPBlocks)
	return cSource{
		principals:    c.principals(at, ".principals", s.Principals),
		notPrincipals: c.principals(at, ".notPrincipals", s.NotPrincipals),
		namespaces:    c.patterns(at, ".namespaces", s.Namespaces),
		notNamespaces: c.patterns(at, ".notNamespaces", s.NotNamespaces),
		sas:           c.serviceAccounts(at, ".serviceAccounts", s.ServiceAccounts),
		notSAs:        c.serviceAccounts(at, ".notServiceAccounts", s.NotServiceAccounts),
		ips:           c.ipBlocks(at, ".ipBlocks", s.IPBlocks),
		notIPs:        c.ipBlocks(at, ".notIpBlocks", s.NotIPBlocks),
	}
}

func (c *ruleCompiler) operation(at where, o *v1alpha1.Operation) cOperation {
	if o == nil {
		return cOperation{}
	}
	c.l7(at, ".hosts", o.Hosts)
	c.l7(at, ".notHosts", o.NotHosts)
	c.l7(at, ".methods", o.Methods)
	c.l7(at, ".notMethods", o.NotMethods)
	c.l7(at, ".paths", o.Paths)
	c.l7(at, ".notPaths", o.NotPaths)
	return cOperation{
		ports:    c.ports(at, ".ports", o.Ports),
		notPorts: c.ports(at, ".notPorts", o.NotPorts),
	}
}

// condition returns ok=false when the condition cannot be enforced at all
// (unknown or L7 key, no values); it is then left out of the rule.
func (c *ruleCompiler) condition(at where, w v1alpha1.Condition) (cCondition, bool) {
	key, known := condKeys[w.Key]
	if !known {
		c.issue(at.path(""), "condition key %q is L7 or unsupported, not enforceable at L4", w.Key)
		return cCondition{}, false
	}
	if len(w.Values) == 0 && len(w.NotValues) == 0 {
		c.issue(at.path(""), "condition %q has neither values nor notValues", w.Key)
		return cCondition{}, false
	}
	cc := cCondition{key: key}
	before := len(c.issues)
	switch key {
	case condSourceIP, condDestinationIP:
		cc.ips = c.ipBlocks(at, ".values", w.Values)
		cc.notIPs = c.ipBlocks(at, ".notValues", w.NotValues)
	case condDestinationPort:
		cc.ports = c.ports(at, ".values", w.Values)
		cc.notPorts = c.ports(at, ".notValues", w.NotValues)
	case condSourcePrincipal:
		cc.strs = c.principals(at, ".values", w.Values)
		cc.notStrs = c.principals(at, ".notValues", w.NotValues)
	default:
		cc.strs = c.patterns(at, ".values", w.Values)
		cc.notStrs = c.patterns(at, ".notValues", w.NotValues)
	}
	if len(c.issues) != before {
		return cCondition{}, false // a bad value: the condition goes as a whole
	}
	cc.hasValues, cc.hasNotVs = len(w.Values) > 0, len(w.NotValues) > 0
	return cc, true
}

// compileRule returns nil when the rule is dropped.
func (c *ruleCompiler) rule(ri int, r *v1alpha1.Rule) *cRule {
	before := len(c.issues)
	out := &cRule{}
	for i := range r.From {
		out.from = append(out.from, c.source(where{ri, "from", i}, r.From[i].Source))
	}
	for i := range r.To {
		out.to = append(out.to, c.operation(where{ri, "to", i}, r.To[i].Operation))
	}
	for i := range r.When {
		if cc, ok := c.condition(where{ri, "when", i}, r.When[i]); ok {
			out.when = append(out.when, cc)
		}
	}
	if len(c.issues) == before {
		out.setIndexKeys()
		return out
	}
	path := fmt.Sprintf("rules[%d]", ri)
	found := strings.Join(c.issues[before:], "; ")
	c.issues = c.issues[:before]
	if c.reduce {
		c.issues = append(c.issues, fmt.Sprintf("%s: enforced without the parts that cannot be (the DENY rule matches more, never less): %s", path, found))
		out.setIndexKeys()
		return out
	}
	c.issues = append(c.issues, fmt.Sprintf("%s: rule dropped, it never matches: %s", path, found))
	return nil
}

// compileAuthorizationPolicy compiles one policy. It never fails: what cannot
// be enforced is handled in the direction that never widens access, and
// reported.
func compileAuthorizationPolicy(p *v1alpha1.AuthorizationPolicy, tds trustDomains) (*cPolicy, PolicyReport) {
	rep := PolicyReport{
		Kind: "AuthorizationPolicy", Namespace: p.Namespace, Name: p.Name,
		Generation: p.Generation, Accepted: true, Reason: ReasonAccepted,
	}
	cp := &cPolicy{key: p.Namespace + "/" + p.Name, ns: p.Namespace, applies: true}
	switch p.Spec.Action {
	case "", v1alpha1.ActionAllow:
		cp.action = v1alpha1.ActionAllow
	case v1alpha1.ActionDeny, v1alpha1.ActionAudit:
		cp.action = p.Spec.Action
	default:
		// CUSTOM (external authorization) or garbage: ambit cannot ask an
		// external authorizer, so the rules deny (fail closed).
		cp.action = v1alpha1.ActionDeny
		rep.Accepted = false
		rep.Reason = ReasonUnsupportedAction
		rep.Message = fmt.Sprintf("action %q is not supported; its rules are enforced as DENY (fail closed)", p.Spec.Action)
	}
	if p.Spec.TargetRef != nil || len(p.Spec.TargetRefs) > 0 {
		cp.applies = false
		rep.Accepted = false
		rep.Reason = ReasonTargetRefUnsupported
		rep.Message = "targetRef/targetRefs attach a policy to a gateway or waypoint; ambit enforces only workload policies, so this one applies to no pod"
	}
	if p.Spec.Selector != nil && len(p.Spec.Selector.MatchLabels) > 0 {
		cp.selector = maps.Clone(p.Spec.Selector.MatchLabels)
	}
	c := ruleCompiler{policyNS: p.Namespace, reduce: cp.action == v1alpha1.ActionDeny, tds: tds}
	for i := range p.Spec.Rules {
		if r := c.rule(i, &p.Spec.Rules[i]); r != nil {
			cp.rules = append(cp.rules, r)
		}
	}
	rep.Issues, rep.Warnings = c.issues, c.warnings
	return cp, rep
}

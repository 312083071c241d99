package authz

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
)

// ErrNoRootNamespace is returned by New without Options.RootNamespace.
var ErrNoRootNamespace = errors.New("authz: root namespace is required")

// Options configure an Engine.
type Options struct {
	// RootNamespace (required): policies here apply mesh-wide. The chart
	// sets it to ambit's install namespace.
	RootNamespace string
	// Logger (optional): compile problems are logged here. Default: discard.
	Logger *slog.Logger
	// TrustDomain (optional) is the mesh's SPIFFE trust domain. With it,
	// principals in policies that name it, one of TrustDomainAliases, or
	// the placeholder "cluster.local" match a peer of any of them (Istio's
	// trustDomainAliases; see trustdomain.go). Without it principals are
	// compared exactly as written.
	TrustDomain string
	// TrustDomainAliases (optional, needs TrustDomain) are other trust
	// domains of the same mesh, e.g. the old one during a migration.
	TrustDomainAliases []string
	// MaxCachedWorkloads (optional) bounds the per-snapshot cache of
	// workload views. Default 8192; beyond it views are computed per call.
	MaxCachedWorkloads int
}

// Stats are cumulative counters, for metrics.
type Stats struct {
	Updates            uint64 // Update calls
	Policies           uint64 // policies compiled, both kinds
	PartiallyEnforced  uint64 // policies compiled with issues
	NotAccepted        uint64 // policies not in force as written
	NilPoliciesSkipped uint64 // nil entries passed to Update
	BadRequests        uint64 // Decide calls without a workload namespace (denied)
}

// Engine decides L4 authorization for connections to local workloads. Decide
// and Recheck are safe for concurrent use with each other and with Update.
type Engine struct {
	log      *slog.Logger
	root     string
	maxViews int
	tds      trustDomains

	mu    sync.Mutex // serializes Update, guards cache
	snap  atomic.Pointer[snapshot]
	cache map[string]compiledEntry // by namespace/name

	updates, policies, partial, notAccepted, nilSkipped, badRequests atomic.Uint64
}

// compiledEntry remembers a compiled policy by the object version it came
// from, so an Update recompiles only what changed.
type compiledEntry struct {
	uid, resourceVersion string
	cp                   *cPolicy
	rep                  PolicyReport
}

// New returns an Engine with no policies (every connection allowed, mTLS
// PERMISSIVE) until the first Update.
func New(opts Options) (*Engine, error) {
	if opts.RootNamespace == "" {
		return nil, ErrNoRootNamespace
	}
	tds, err := newTrustDomains(opts.TrustDomain, opts.TrustDomainAliases)
	if err != nil {
		return nil, err
	}
	e := &Engine{log: opts.Logger, root: opts.RootNamespace, maxViews: opts.MaxCachedWorkloads, tds: tds}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.maxViews <= 0 {
		e.maxViews = 8192
	}
	e.snap.Store(&snapshot{rootNS: e.root, byNS: map[string]*nsPolicies{}, pa: paIndex{}, maxViews: int32(e.maxViews)})
	return e, nil
}

// Update compiles the complete current set of policies and swaps it in
// atomically: a concurrent Decide sees either the old or the new set, never
// a mix. It returns one report per non-nil policy (AuthorizationPolicies
// first, in input order). Nothing in a policy can make Update fail: what
// cannot be enforced is handled in the direction that never widens access
// and reported.
func (e *Engine) Update(aps []*v1alpha1.AuthorizationPolicy, pas []*v1alpha1.PeerAuthentication) []PolicyReport {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.updates.Add(1)
	reports := make([]PolicyReport, 0, len(aps)+len(pas))

	compiled := make([]*cPolicy, 0, len(aps))
	seen := make(map[string]bool, len(aps))
	cache := make(map[string]compiledEntry, len(aps))
	for _, p := range aps {
		if p == nil {
			e.nilSkipped.Add(1)
			e.log.Error("authz: nil AuthorizationPolicy passed to Update, skipped")
			continue
		}
		cp, rep := e.compile(p, cache)
		if seen[cp.key] {
			rep.Accepted, rep.Reason = false, ReasonSuperseded
			rep.Message = "another object with the same namespace/name was passed first"
		} else {
			seen[cp.key] = true
			compiled = append(compiled, cp)
		}
		reports = append(reports, rep)
	}
	slices.SortFunc(compiled, func(a, b *cPolicy) int {
		return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.key, b.key))
	})
	byNS := map[string]*nsPolicies{}
	for i, cp := range compiled {
		ns := byNS[cp.ns]
		if ns == nil {
			ns = &nsPolicies{}
			byNS[cp.ns] = ns
		}
		ns.all = append(ns.all, cp)
		ns.ords = append(ns.ords, int32(i))
	}

	cpas := make([]*cPeerAuth, 0, len(pas))
	paReports := make([]*PolicyReport, 0, len(pas))
	first := len(reports)
	for _, p := range pas {
		if p == nil {
			e.nilSkipped.Add(1)
			e.log.Error("authz: nil PeerAuthentication passed to Update, skipped")
			continue
		}
		c, rep := compilePeerAuthentication(p)
		reports = append(reports, rep)
		cpas = append(cpas, c)
	}
	for i := first; i < len(reports); i++ {
		paReports = append(paReports, &reports[i])
	}
	paIdx := buildPAIndex(cpas, paReports, e.root)

	e.cache = cache
	old := e.snap.Load()
	e.snap.Store(&snapshot{
		generation: old.generation + 1,
		rootNS:     e.root,
		byNS:       byNS,
		pa:         paIdx,
		maxViews:   int32(e.maxViews),
	})

	for i := range reports {
		r := &reports[i]
		e.policies.Add(1)
		if len(r.Issues) > 0 {
			e.partial.Add(1)
		}
		if !r.Accepted {
			e.notAccepted.Add(1)
		}
		if len(r.Issues) > 0 || len(r.Warnings) > 0 || !r.Accepted {
			e.log.Warn("authz: policy not enforced exactly as written",
				"kind", r.Kind, "policy", r.Key(), "accepted", r.Accepted,
				"reason", r.Reason, "message", r.Message, "issues", r.Issues, "warnings", r.Warnings)
		}
	}
	return reports
}

// compile returns the policy compiled, reusing the previous Update's result
// when the object is the same version (same UID and resourceVersion; objects
// without a resourceVersion are always compiled). The new cache gets the
// entry.
func (e *Engine) compile(p *v1alpha1.AuthorizationPolicy, next map[string]compiledEntry) (*cPolicy, PolicyReport) {
	key := p.Namespace + "/" + p.Name
	if p.ResourceVersion != "" {
		if c, ok := e.cache[key]; ok && c.uid == string(p.UID) && c.resourceVersion == p.ResourceVersion {
			next[key] = c
			rep := c.rep
			rep.Issues, rep.Warnings = slices.Clone(rep.Issues), slices.Clone(rep.Warnings)
			return c.cp, rep
		}
	}
	cp, rep := compileAuthorizationPolicy(p, e.tds)
	if p.ResourceVersion != "" {
		if _, dup := next[key]; !dup {
			stored := rep
			stored.Issues, stored.Warnings = slices.Clone(rep.Issues), slices.Clone(rep.Warnings)
			next[key] = compiledEntry{uid: string(p.UID), resourceVersion: p.ResourceVersion, cp: cp, rep: stored}
		}
	}
	return cp, rep
}

// TrustDomains returns the trust domain and its aliases the engine treats
// as one (trust domain first); nil without Options.TrustDomain.
func (e *Engine) TrustDomains() []string { return slices.Clone(e.tds) }

// Generation counts Updates; it changes whenever the policy set may have.
func (e *Engine) Generation() uint64 { return e.snap.Load().generation }

// Stats returns the cumulative counters.
func (e *Engine) Stats() Stats {
	return Stats{
		Updates: e.updates.Load(), Policies: e.policies.Load(),
		PartiallyEnforced: e.partial.Load(), NotAccepted: e.notAccepted.Load(),
		NilPoliciesSkipped: e.nilSkipped.Load(), BadRequests: e.badRequests.Load(),
	}
}

// Decide authorizes one connection to a local workload, in Istio's order:
// PeerAuthentication STRICT refuses a connection without verified identity;
// then any matching DENY policy denies; with no ALLOW policy applying to the
// workload the connection is allowed; a matching ALLOW policy allows;
// otherwise it is denied. AUDIT policies that match are listed in
// Decision.Audit and change nothing.
func (e *Engine) Decide(req Request) Decision {
	if req.Workload.Namespace == "" {
		// A caller bug, not a policy question: fail closed, loudly.
		e.badRequests.Add(1)
		e.log.Error("authz: decision requested without a workload namespace; denied", "workload", req.Workload.Name)
		return Decision{Reason: ReasonBadRequest, MTLSMode: v1alpha1.MTLSStrict}
	}
	s := e.snap.Load()
	v := s.view(&req.Workload)
	a := requestAttrs(&req)
	ms := v.pa.forPort(a.dstPort)
	d := Decision{MTLSMode: ms.mode}
	if v.audit.policies > 0 {
		d.Audit = v.audit.all(&a)
	}
	if ms.mode == v1alpha1.MTLSStrict && a.principal == "" {
		d.Reason, d.Policy = ReasonStrictNoIdentity, ms.policy
		return d
	}
	if v.deny.policies > 0 {
		if p := v.deny.first(&a); p != nil {
			d.Reason, d.Policy = ReasonDenyPolicy, p.key
			return d
		}
	}
	if v.allow.policies == 0 {
		d.Allow, d.Reason = true, ReasonNoAllowPolicy
		return d
	}
	if p := v.allow.first(&a); p != nil {
		d.Allow, d.Reason, d.Policy = true, ReasonAllowPolicy, p.key
		return d
	}
	d.Reason = ReasonNoAllowMatch
	return d
}

// Recheck re-decides a live connection against the current policies; the
// node agent calls it for every open connection after an Update and closes
// those that are now denied. It is Decide under another name, so a live
// connection is held to exactly the rules a new one would be.
func (e *Engine) Recheck(req Request) Decision { return e.Decide(req) }

// String describes a decision for logs.
func (d Decision) String() string {
	verdict := "deny"
	if d.Allow {
		verdict = "allow"
	}
	if d.Policy != "" {
		return fmt.Sprintf("%s (%s: %s; mtls %s)", verdict, d.Reason, d.Policy, d.MTLSMode)
	}
	return fmt.Sprintf("%s (%s; mtls %s)", verdict, d.Reason, d.MTLSMode)
}

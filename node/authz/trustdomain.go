package authz

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Trust-domain aliases, with Istio's semantics (its trustDomainAliases in
// MeshConfig, applied by istiod when it builds a sidecar's RBAC filter).
// The mesh's trust domain and its aliases name one mesh: a policy value
// that names one of them, or the placeholder "cluster.local", stands for
// all of them. Compilation rewrites such values once per policy, so
// matching stays plain string matching:
//
//   - Only principals are rewritten: principals, notPrincipals and the
//     values and notValues of source.principal conditions. Namespaces and
//     service accounts are read from the peer's SPIFFE path whatever its
//     trust domain, so they need nothing.
//   - A value is rewritten only if it has the shape td/ns/<ns>/sa/<sa>
//     (five '/'-separated parts) and its first part is not "*". Anything
//     else ("*", "*/sa/web", "cluster.local/ns/foo/*") is left alone: it
//     does not constrain the trust domain, or not in a way Istio rewrites.
//   - Its trust domain part td must be "cluster.local", or be one of the
//     set, or be a pattern ("*local", "clus*") that matches one of the set.
//     Otherwise the value is kept as written (and the report warns: no peer
//     of a domain outside the set gets through the TLS handshake).
//   - The value becomes one value per domain of the set, td replaced by
//     that domain, except that a leading-'*' td that matches a domain is
//     kept as written for it; duplicates are dropped.
//
// Without a configured trust domain (Options.TrustDomain empty) nothing is
// rewritten: principals are compared exactly as written.

// ErrBadTrustDomain is returned (wrapped) by New for a trust domain or
// alias that is not a SPIFFE trust domain name.
var ErrBadTrustDomain = errors.New("authz: not a SPIFFE trust domain name")

// placeholderTrustDomain in a policy stands for the mesh's own trust domain
// and its aliases, whatever the trust domain is called.
const placeholderTrustDomain = "cluster.local"

// trustDomains is the mesh's trust domain first, then its aliases; empty
// when no trust domain was configured.
type trustDomains []string

// newTrustDomains checks and deduplicates the configured names.
func newTrustDomains(td string, aliases []string) (trustDomains, error) {
	if td == "" {
		if len(aliases) > 0 {
			return nil, fmt.Errorf("%w: trust domain aliases %v without a trust domain", ErrBadTrustDomain, aliases)
		}
		return nil, nil
	}
	out := trustDomains{}
	for _, name := range append([]string{td}, aliases...) {
		parsed, err := spiffeid.TrustDomainFromString(name)
		if err != nil || parsed.Name() != name {
			return nil, fmt.Errorf("%w: %q", ErrBadTrustDomain, name)
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// tdMatches reports whether the trust-domain part of a policy value (which
// may be a '*' prefix or suffix pattern) matches the domain name.
func tdMatches(written, name string) bool {
	switch {
	case written == name:
		return true
	case strings.HasPrefix(written, "*"):
		return strings.HasSuffix(name, written[1:])
	case strings.HasSuffix(written, "*"):
		return strings.HasPrefix(name, written[:len(written)-1])
	}
	return false
}

// expand returns the values v stands for (see the rules above) and whether
// v names a trust domain outside the set (kept as written).
func (t trustDomains) expand(v string) (out []string, foreign bool) {
	if len(t) == 0 {
		return []string{v}, false
	}
	written, rest, ok := strings.Cut(v, "/")
	if !ok || written == "*" || strings.Count(rest, "/") != 3 {
		return []string{v}, false
	}
	if written != placeholderTrustDomain && !slices.ContainsFunc(t, func(name string) bool { return tdMatches(written, name) }) {
		return []string{v}, true
	}
	out = make([]string, 0, len(t))
	for _, name := range t {
		s := name + "/" + rest
		if strings.HasPrefix(written, "*") && tdMatches(written, name) {
			s = v
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, false
}

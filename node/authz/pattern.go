package authz

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Errors for values a policy cannot be enforced with. Callers see them
// wrapped in PolicyReport messages; tests branch on them with errors.Is.
var (
	ErrEmptyValue  = errors.New("empty value")
	ErrBadIPBlock  = errors.New("not an IP address or CIDR")
	ErrBadPort     = errors.New("not a port number 0-65535")
	ErrBadSA       = errors.New(`not a service account ("namespace/name" or "name", no wildcards)`)
	ErrBadMTLSMode = errors.New("unknown mTLS mode")
)

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchSuffix
	matchPresence
)

// pattern is one string value of a policy: exact ("abc"), prefix ("abc*"),
// suffix ("*abc") or presence ("*"). Only a leading or trailing '*' is
// special; every other character, '*' in the middle included, is literal.
// A leading '*' wins over a trailing one ("*abc*" is the suffix "abc*"),
// which is how Istio reads such values.
type pattern struct {
	kind matchKind
	s    string
}

func parsePattern(v string) (pattern, error) {
	switch {
	case v == "":
		return pattern{}, ErrEmptyValue
	case v == "*":
		return pattern{kind: matchPresence}, nil
	case strings.HasPrefix(v, "*"):
		return pattern{kind: matchSuffix, s: v[1:]}, nil
	case strings.HasSuffix(v, "*"):
		return pattern{kind: matchPrefix, s: v[:len(v)-1]}, nil
	default:
		return pattern{kind: matchExact, s: v}, nil
	}
}

// match reports whether v matches. An absent (empty) value matches no
// pattern, presence included: that is what makes principals, namespaces
// and the like unmatchable for a plaintext connection, and their not-forms
// always true for it.
func (p pattern) match(v string) bool {
	if v == "" {
		return false
	}
	switch p.kind {
	case matchExact:
		return v == p.s
	case matchPrefix:
		return strings.HasPrefix(v, p.s)
	case matchSuffix:
		return strings.HasSuffix(v, p.s)
	default:
		return true
	}
}

func (p pattern) String() string {
	switch p.kind {
	case matchPrefix:
		return p.s + "*"
	case matchSuffix:
		return "*" + p.s
	case matchPresence:
		return "*"
	default:
		return p.s
	}
}

func anyPattern(ps []pattern, v string) bool {
	for _, p := range ps {
		if p.match(v) {
			return true
		}
	}
	return false
}

// parseIPBlock reads "10.0.0.1" (a /32 or /128) or "10.0.0.0/8". Host bits
// below the prefix length are cleared.
func parseIPBlock(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q: %w", v, ErrBadIPBlock)
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%q: %w", v, ErrBadIPBlock)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: %w", v, ErrBadIPBlock)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func anyPrefix(ps []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parsePort reads a decimal port. Istio writes ports as strings.
func parsePort(v string) (uint16, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", v, ErrBadPort)
	}
	return uint16(n), nil
}

func anyPort(ps []uint16, p uint16) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// serviceAccount is one serviceAccounts value, resolved against the
// policy's namespace when written without one.
type serviceAccount struct{ ns, name string }

func parseServiceAccount(v, policyNS string) (serviceAccount, error) {
	ns, name, found := strings.Cut(v, "/")
	if !found {
		ns, name = policyNS, v
	}
	if ns == "" || name == "" || strings.ContainsAny(name, "/*") || strings.Contains(ns, "*") {
		return serviceAccount{}, fmt.Errorf("%q: %w", v, ErrBadSA)
	}
	return serviceAccount{ns: ns, name: name}, nil
}

func anySA(sas []serviceAccount, ns, name string) bool {
	if ns == "" || name == "" {
		return false
	}
	for _, sa := range sas {
		if sa.ns == ns && sa.name == name {
			return true
		}
	}
	return false
}

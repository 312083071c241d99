package authz

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
)

func TestTrustDomainExpand(t *testing.T) {
	tds, err := newTrustDomains("cluster.local", []string{"old.local", "cluster.local", "legacy.example"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (trustDomains{"cluster.local", "old.local", "legacy.example"}); !slices.Equal(tds, want) {
		t.Fatalf("set %v, want %v (deduplicated, trust domain first)", tds, want)
	}
	all := func(rest string) []string {
		return []string{"cluster.local" + rest, "old.local" + rest, "legacy.example" + rest}
	}
	cases := []struct {
		in      string
		want    []string
		foreign bool
	}{
		{"cluster.local/ns/shop/sa/web", all("/ns/shop/sa/web"), false},
		{"old.local/ns/shop/sa/web", all("/ns/shop/sa/web"), false},
		{"legacy.example/ns/shop/sa/web", all("/ns/shop/sa/web"), false},
		// Prefix and suffix patterns after the trust domain are rewritten
		// like exact values (the value still has five parts).
		{"cluster.local/ns/shop/sa/w*", all("/ns/shop/sa/w*"), false},
		{"cluster.local/ns/*/sa/web", all("/ns/*/sa/web"), false},
		// Not five parts, or "*" as the trust domain: left alone.
		{"*", []string{"*"}, false},
		{"*/ns/shop/sa/web", []string{"*/ns/shop/sa/web"}, false},
		{"cluster.local/ns/shop/*", []string{"cluster.local/ns/shop/*"}, false},
		{"*/sa/web", []string{"*/sa/web"}, false},
		{"cluster.local/ns/shop/sa/web/extra", []string{"cluster.local/ns/shop/sa/web/extra"}, false},
		// A suffix pattern as the trust domain stays as written for the
		// domains it matches and is replaced for the others.
		{"*local/ns/shop/sa/web", []string{"*local/ns/shop/sa/web", "legacy.example/ns/shop/sa/web"}, false},
		// A prefix pattern as the trust domain is replaced everywhere.
		{"old*/ns/shop/sa/web", all("/ns/shop/sa/web"), false},
		// A domain outside the set: kept, reported.
		{"partner.org/ns/shop/sa/web", []string{"partner.org/ns/shop/sa/web"}, true},
		{"*.org/ns/shop/sa/web", []string{"*.org/ns/shop/sa/web"}, true},
	}
	for _, tc := range cases {
		got, foreign := tds.expand(tc.in)
		if !slices.Equal(got, tc.want) || foreign != tc.foreign {
			t.Errorf("expand(%q) = %v, %v; want %v, %v", tc.in, got, foreign, tc.want, tc.foreign)
		}
	}
	// The placeholder stands for the trust domain whatever it is called.
	other, err := newTrustDomains("example.org", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := other.expand("cluster.local/ns/shop/sa/web"); !slices.Equal(got, []string{"example.org/ns/shop/sa/web"}) {
		t.Errorf("placeholder with trust domain example.org: %v", got)
	}
	// No trust domain: nothing is rewritten.
	if got, foreign := trustDomains(nil).expand("cluster.local/ns/shop/sa/web"); !slices.Equal(got, []string{"cluster.local/ns/shop/sa/web"}) || foreign {
		t.Errorf("no trust domain: %v %v", got, foreign)
	}
}

func TestNewTrustDomainErrors(t *testing.T) {
	for _, o := range []Options{
		{RootNamespace: rootNS, TrustDomainAliases: []string{"old.local"}},
		{RootNamespace: rootNS, TrustDomain: "Cluster.Local"},
		{RootNamespace: rootNS, TrustDomain: "cluster.local", TrustDomainAliases: []string{"old.local/x"}},
		{RootNamespace: rootNS, TrustDomain: "cluster.local", TrustDomainAliases: []string{"spiffe://old.local"}},
		{RootNamespace: rootNS, TrustDomain: "cluster.local", TrustDomainAliases: []string{""}},
	} {
		if _, err := New(o); !errors.Is(err, ErrBadTrustDomain) {
			t.Errorf("New(%+v) = %v, want ErrBadTrustDomain", o, err)
		}
	}
	e, err := New(Options{RootNamespace: rootNS, TrustDomain: "cluster.local", TrustDomainAliases: []string{"old.local"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.TrustDomains(); !slices.Equal(got, []string{"cluster.local", "old.local"}) {
		t.Fatalf("TrustDomains() = %v", got)
	}
}

const (
	shopWeb    = "cluster.local/ns/shop/sa/web"
	oldShopWeb = "old.local/ns/shop/sa/web"
	oldShopDB  = "old.local/ns/shop/sa/db"
)

// aliasCase is decided by an engine with trust domain cluster.local and
// alias old.local (allow), and by one with the same trust domain and no
// alias (allowNoAlias): each rule's effect shows in the difference.
type aliasCase struct {
	name                string
	aps                 []*v1alpha1.AuthorizationPolicy
	pas                 []*v1alpha1.PeerAuthentication
	req                 Request
	allow, allowNoAlias bool
}

func aliasCases() []aliasCase {
	prin := func(v ...string) v1alpha1.Rule { return src(v1alpha1.Source{Principals: v}) }
	return []aliasCase{
		{name: "principals naming the trust domain match a peer of the alias",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin(shopWeb))},
			req: request(mtlsFrom(oldShopWeb)), allow: true},
		{name: "principals naming the alias match a peer of the trust domain",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin(oldShopWeb))},
			req: request(mtlsFrom(shopWeb)), allow: true},
		{name: "principals still tell service accounts apart",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin(shopWeb))},
			req: request(mtlsFrom(oldShopDB))},
		{name: "notPrincipals naming the trust domain exclude the alias peer",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", src(v1alpha1.Source{NotPrincipals: ss(shopWeb)}))},
			req: request(mtlsFrom(oldShopWeb)), allow: true},
		{name: "notPrincipals naming the alias exclude the trust-domain peer",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", src(v1alpha1.Source{NotPrincipals: ss(oldShopWeb)}))},
			req: request(mtlsFrom(shopWeb)), allow: true},
		{name: "source.principal values",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", when(v1alpha1.Condition{Key: "source.principal", Values: ss(shopWeb)}))},
			req: request(mtlsFrom(oldShopWeb)), allow: true},
		{name: "source.principal notValues",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", when(v1alpha1.Condition{Key: "source.principal", NotValues: ss(shopWeb)}))},
			req: request(mtlsFrom(oldShopWeb)), allow: true},
		{name: "DENY by principal denies the alias peer too",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", prin(shopWeb))},
			req: request(mtlsFrom(oldShopWeb)), allow: false, allowNoAlias: true},
		{name: "namespaces come from the identity whatever its trust domain",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Namespaces: ss("shop")}))},
			req: request(mtlsFrom(oldShopWeb)), allow: true, allowNoAlias: true},
		{name: "notNamespaces come from the identity whatever its trust domain",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", src(v1alpha1.Source{NotNamespaces: ss("shop")}))},
			req: request(mtlsFrom(oldShopWeb)), allow: true, allowNoAlias: true},
		{name: "source.namespace condition",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", when(v1alpha1.Condition{Key: "source.namespace", Values: ss("shop")}))},
			req: request(mtlsFrom(oldShopWeb)), allow: true, allowNoAlias: true},
		{name: "serviceAccounts come from the identity whatever its trust domain",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{ServiceAccounts: ss("shop/web")}))},
			req: request(mtlsFrom(oldShopWeb)), allow: true, allowNoAlias: true},
		{name: "a pattern after the trust domain is rewritten",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin("cluster.local/ns/shop/sa/w*"))},
			req: request(mtlsFrom(oldShopWeb)), allow: true},
		{name: "a prefix pattern of fewer parts is not rewritten (Istio's rule)",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin("cluster.local/ns/shop/*"))},
			req: request(mtlsFrom(oldShopWeb))},
		{name: "a star trust domain matches any",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin("*/ns/shop/sa/web"))},
			req: request(mtlsFrom(oldShopWeb)), allow: true, allowNoAlias: true},
		{name: "a suffix-pattern trust domain matching the alias",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin("*local/ns/shop/sa/web"))},
			req: request(mtlsFrom(oldShopWeb)), allow: true, allowNoAlias: true},
		{name: "a prefix-pattern trust domain matching the alias is rewritten to every domain",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin("old*/ns/shop/sa/web"))},
			req: request(mtlsFrom(shopWeb)), allow: true},
		{name: "presence matches the alias peer",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin("*"))},
			req: request(mtlsFrom(oldShopWeb)), allow: true, allowNoAlias: true},
		{name: "a trust domain outside the set is compared as written",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin("partner.org/ns/shop/sa/web"))},
			req: request(mtlsFrom(oldShopWeb))},
		{name: "plaintext still matches no principal",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin(shopWeb))},
			req: request(plaintext())},
		{name: "PeerAuthentication STRICT admits a verified alias peer",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/default", v1alpha1.MTLSStrict)},
			req: request(mtlsFrom(oldShopWeb)), allow: true, allowNoAlias: true},
		{name: "PeerAuthentication STRICT with an ALLOW naming the trust domain admits the alias peer",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/default", v1alpha1.MTLSStrict)},
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", prin(shopWeb))},
			req: request(mtlsFrom(oldShopWeb)), allow: true},
	}
}

func TestDecideTrustDomainAliases(t *testing.T) {
	withAlias, err := New(Options{RootNamespace: rootNS, TrustDomain: "cluster.local", TrustDomainAliases: []string{"old.local"}})
	if err != nil {
		t.Fatal(err)
	}
	noAlias, err := New(Options{RootNamespace: rootNS, TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range aliasCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, x := range []struct {
				e    *Engine
				want bool
			}{{withAlias, tc.allow}, {noAlias, tc.allowNoAlias}} {
				x.e.Update(tc.aps, tc.pas)
				if d := x.e.Decide(tc.req); d.Allow != x.want {
					t.Fatalf("trust domains %v: %v, want allow=%v", x.e.TrustDomains(), d, x.want)
				}
			}
		})
	}
}

// The placeholder cluster.local names the mesh's trust domain whatever it
// is called, as in Istio: a mesh renamed to example.org keeps its policies.
func TestPlaceholderTrustDomain(t *testing.T) {
	e, err := New(Options{RootNamespace: rootNS, TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	e.Update([]*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss(shopWeb)}))}, nil)
	if d := e.Decide(request(mtlsFrom("example.org/ns/shop/sa/web"))); !d.Allow {
		t.Fatalf("example.org peer: %v", d)
	}
	if d := e.Decide(request(mtlsFrom(shopWeb))); d.Allow {
		t.Fatalf("a cluster.local peer is not of this mesh: %v", d)
	}
	// Without a trust domain the engine compares as written (the old
	// behaviour, kept for callers that configure none).
	plain := newEngine(t)
	plain.Update([]*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss(shopWeb)}))}, nil)
	if d := plain.Decide(request(mtlsFrom("example.org/ns/shop/sa/web"))); d.Allow {
		t.Fatalf("no trust domain configured: %v", d)
	}
}

func TestForeignTrustDomainReported(t *testing.T) {
	e, err := New(Options{RootNamespace: rootNS, TrustDomain: "cluster.local", TrustDomainAliases: []string{"old.local"}})
	if err != nil {
		t.Fatal(err)
	}
	reps := e.Update([]*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss(shopWeb, "partner.org/ns/shop/sa/web")}))}, nil)
	if len(reps) != 1 || !reps[0].Accepted || len(reps[0].Issues) != 0 || len(reps[0].Warnings) != 1 ||
		!strings.Contains(reps[0].Warnings[0], `"partner.org/ns/shop/sa/web" names a trust domain that is neither cluster.local nor an alias`) {
		t.Fatalf("report %+v", reps)
	}
	// The good value still works next to the foreign one.
	if d := e.Decide(request(mtlsFrom(oldShopWeb))); !d.Allow {
		t.Fatalf("alias peer: %v", d)
	}
}

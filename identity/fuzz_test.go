package identity_test

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
)

// FuzzParseWorkload: whatever SPIFFE ID comes in, ParseWorkload either
// refuses it or returns parts that rebuild exactly the same ID.
func FuzzParseWorkload(f *testing.F) {
	for _, s := range []string{"spiffe://cluster.local/ns/a/sa/b", "spiffe://td/ns//sa/b", "spiffe://td/ns/a/sa/b/c",
		"spiffe://td/sa/b/ns/a", "spiffe://td", "spiffe://td/ns/a%2Fb/sa/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return
		}
		ns, sa, err := identity.ParseWorkload(id)
		if err != nil {
			return
		}
		back, err := identity.Workload(id.TrustDomain(), ns, sa)
		if err != nil || back != id {
			t.Fatalf("%q -> (%q, %q) -> %v %v", s, ns, sa, back, err)
		}
	})
}

func TestParseWorkload(t *testing.T) {
	ns, sa, err := identity.ParseWorkload(spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web"))
	if err != nil || ns != "shop" || sa != "web" {
		t.Fatalf("%q %q %v", ns, sa, err)
	}
	for _, s := range []string{"spiffe://cluster.local/ns/shop", "spiffe://cluster.local/ns/shop/sa/web/x", "spiffe://cluster.local/sa/web/ns/shop", "spiffe://cluster.local"} {
		if _, _, err := identity.ParseWorkload(spiffeid.RequireFromString(s)); err == nil {
			t.Errorf("%s accepted", s)
		}
	}
}

package agent

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/node/authz"
)

// The bundle file holds the roots of the trust domain and of its alias; the
// store answers for both domains, and /config_dump's "trust" section says
// so, with the engine's set.
func TestTrustSection(t *testing.T) {
	main, old := identitytest.MustCA("cluster.local"), identitytest.MustCA("old.local")
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, identity.EncodePEMCertificates([]*x509.Certificate{main.Cert, old.Cert}), 0o600); err != nil {
		t.Fatal(err)
	}
	bundles, err := loadBundle(path, main.TrustDomain, []spiffeid.TrustDomain{old.TrustDomain})
	if err != nil {
		t.Fatal(err)
	}
	// An identity of the alias, issued by the alias's own root, verifies.
	svid := old.MustMint(spiffeid.RequireFromString("spiffe://old.local/ns/shop/sa/web"))
	if err := identity.CheckSVID(svid, svid.ID, bundles, svid.Certificates[0].NotBefore.Add(1)); err != nil {
		t.Fatalf("alias identity: %v", err)
	}
	engine, err := authz.New(authz.Options{RootNamespace: "ambit-system", TrustDomain: "cluster.local", TrustDomainAliases: []string{"old.local"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(trustSection(bundles, engine)())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		TrustDomain   string   `json:"trust_domain"`
		Aliases       []string `json:"trust_domain_aliases"`
		Trusted       []string `json:"trusted_domains"`
		PolicyDomains []string `json:"policy_trust_domains"`
		Roots         []struct {
			SHA256 string `json:"sha256"`
		} `json:"roots"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(old.Cert.Raw)
	if got.TrustDomain != "cluster.local" || !slices.Equal(got.Aliases, []string{"old.local"}) ||
		!slices.Equal(got.Trusted, []string{"cluster.local", "old.local"}) ||
		!slices.Equal(got.PolicyDomains, []string{"cluster.local", "old.local"}) ||
		len(got.Roots) != 2 || got.Roots[1].SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("trust section: %s", b)
	}

	// Without the alias the same certificate is refused.
	plain, err := loadBundle(path, main.TrustDomain, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.CheckSVID(svid, svid.ID, plain, svid.Certificates[0].NotBefore.Add(1)); err == nil {
		t.Fatal("alias identity verified without the alias")
	}
}

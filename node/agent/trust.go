package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"time"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/node/authz"
)

// trustView is the "trust" section of /config_dump: which trust domains
// this daemon accepts peers from and treats as one in policies, and the
// roots they verify against (public certificates, summarised).
type trustView struct {
	TrustDomain string `json:"trust_domain"`
	// Aliases verify against Roots and match policies naming TrustDomain.
	Aliases []string `json:"trust_domain_aliases"`
	// Trusted lists every trust domain a peer may come from (sorted).
	Trusted []string `json:"trusted_domains"`
	// PolicyDomains are the domains the policy engine treats as one.
	PolicyDomains []string   `json:"policy_trust_domains"`
	Roots         []rootView `json:"roots"`
}

type rootView struct {
	Subject  string    `json:"subject"`
	SHA256   string    `json:"sha256"`
	NotAfter time.Time `json:"not_after"`
}

func trustSection(bundles *identity.BundleStore, engine *authz.Engine) func() any {
	return func() any {
		cfg := bundles.Config()
		v := trustView{TrustDomain: cfg.TrustDomain.Name(), Aliases: []string{}, Trusted: []string{},
			PolicyDomains: engine.TrustDomains(), Roots: []rootView{}}
		for _, a := range cfg.Aliases {
			v.Aliases = append(v.Aliases, a.Name())
		}
		for _, td := range bundles.TrustedDomains() {
			v.Trusted = append(v.Trusted, td.Name())
		}
		slices.Sort(v.Trusted)
		for _, r := range cfg.Roots {
			sum := sha256.Sum256(r.Raw)
			v.Roots = append(v.Roots, rootView{Subject: r.Subject.String(), SHA256: hex.EncodeToString(sum[:]), NotAfter: r.NotAfter})
		}
		return v
	}
}

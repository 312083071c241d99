package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrUntrustedDomain is returned (wrapped) by BundleStore for a trust domain
// it holds no roots for.
var ErrUntrustedDomain = errors.New("identity: no trust bundle for trust domain")

// BundleConfig is the whole trust configuration, replaced atomically by
// BundleStore.Update.
type BundleConfig struct {
	// TrustDomain is the mesh's own trust domain. Required.
	TrustDomain spiffeid.TrustDomain
	// Roots are the trusted roots of TrustDomain. During a root rotation this
	// holds the old and the new root. Required (at least one).
	Roots []*x509.Certificate
	// Aliases are trust domains treated as TrustDomain: an identity in an
	// alias domain verifies against Roots. Optional.
	Aliases []spiffeid.TrustDomain
	// Federated maps other trust domains to their own roots. Optional.
	Federated map[spiffeid.TrustDomain][]*x509.Certificate
}

// BundleStore is an x509bundle.Source over a BundleConfig that can be
// replaced at any time. Each handshake asks the store afresh, so an update
// applies to the next handshake; handshakes in flight keep the bundle they
// already got. Reads are one atomic load and a map lookup.
type BundleStore struct {
	state atomic.Pointer[bundleState]
}

type bundleState struct {
	cfg     BundleConfig
	bundles map[spiffeid.TrustDomain]*x509bundle.Bundle
}

var _ x509bundle.Source = (*BundleStore)(nil)

// NewBundleStore returns a store holding cfg.
func NewBundleStore(cfg BundleConfig) (*BundleStore, error) {
	s := &BundleStore{}
	if err := s.Update(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Update replaces the whole trust configuration atomically. An invalid
// configuration is refused and the previous one stays in force.
func (s *BundleStore) Update(cfg BundleConfig) error {
	if cfg.TrustDomain.IsZero() {
		return errors.New("identity: bundle config: trust domain required")
	}
	if len(cfg.Roots) == 0 {
		return fmt.Errorf("identity: bundle config: no roots for %s", cfg.TrustDomain)
	}
	for _, r := range cfg.Roots {
		if r == nil || !r.IsCA {
			return fmt.Errorf("identity: bundle config: a root of %s is not a CA certificate", cfg.TrustDomain)
		}
	}
	st := &bundleState{cfg: cfg, bundles: map[spiffeid.TrustDomain]*x509bundle.Bundle{}}
	for td, roots := range cfg.Federated {
		if td == cfg.TrustDomain {
			return fmt.Errorf("identity: bundle config: %s is both the trust domain and federated", td)
		}
		if len(roots) > 0 {
			st.bundles[td] = x509bundle.FromX509Authorities(td, roots)
		}
	}
	st.bundles[cfg.TrustDomain] = x509bundle.FromX509Authorities(cfg.TrustDomain, cfg.Roots)
	for _, alias := range cfg.Aliases {
		if alias == cfg.TrustDomain {
			continue
		}
		if _, dup := cfg.Federated[alias]; dup {
			return fmt.Errorf("identity: bundle config: %s is both an alias and federated", alias)
		}
		st.bundles[alias] = x509bundle.FromX509Authorities(alias, cfg.Roots)
	}
	s.state.Store(st)
	return nil
}

// SetRoots replaces the roots of the main trust domain, keeping aliases and
// federation: the step of a root rotation (add the new root, later remove
// the old one).
func (s *BundleStore) SetRoots(roots []*x509.Certificate) error {
	cfg := s.Config()
	cfg.Roots = roots
	return s.Update(cfg)
}

// Config returns the configuration in force.
func (s *BundleStore) Config() BundleConfig {
	st := s.state.Load()
	cfg := st.cfg
	cfg.Roots = append([]*x509.Certificate(nil), cfg.Roots...)
	cfg.Aliases = append([]spiffeid.TrustDomain(nil), cfg.Aliases...)
	return cfg
}

// TrustDomain is the main trust domain.
func (s *BundleStore) TrustDomain() spiffeid.TrustDomain { return s.state.Load().cfg.TrustDomain }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *BundleStore) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if b, ok := s.state.Load().bundles[td]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUntrustedDomain, td.Name())
}

// TrustedDomains lists the trust domains the store answers for.
func (s *BundleStore) TrustedDomains() []spiffeid.TrustDomain {
	st := s.state.Load()
	out := make([]spiffeid.TrustDomain, 0, len(st.bundles))
	for td := range st.bundles {
		out = append(out, td)
	}
	return out
}

// LoadRoots reads PEM certificates (one or more roots) from a file.
func LoadRoots(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: read roots: %w", err)
	}
	certs, err := ParsePEMCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("identity: roots %s: %w", path, err)
	}
	return certs, nil
}

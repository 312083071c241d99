// Package identitytest mints SPIFFE workload certificates for tests,
// benchmarks and the demo: a throw-away root CA, leaf certificates with any
// shape a test needs (expired, foreign trust domain, no URI SAN, extra SANs),
// and an in-memory SVID source. It is never used by the daemon itself.
package identitytest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/identity"
)

// CA is a self-signed root for one trust domain.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Cert        *x509.Certificate
	Key         crypto.Signer
}

// NewCA creates a root CA for td, valid from an hour ago for a day.
func NewCA(td spiffeid.TrustDomain) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"ambit test"}, CommonName: "test root " + td.Name()},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{TrustDomain: td, Cert: cert, Key: key}, nil
}

// MustCA is NewCA for a trust domain name, panicking on error.
func MustCA(trustDomain string) *CA {
	ca, err := NewCA(spiffeid.RequireTrustDomainFromString(trustDomain))
	if err != nil {
		panic(err)
	}
	return ca
}

// Bundle is the CA's trust bundle (its root alone).
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert})
}

// MintOption shapes a leaf certificate.
type MintOption func(*x509.Certificate)

// WithValidity sets the leaf's validity window.
func WithValidity(notBefore, notAfter time.Time) MintOption {
	return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = notBefore, notAfter }
}

// WithURIs replaces the leaf's URI SANs (none for an empty list).
func WithURIs(uris ...string) MintOption {
	return func(c *x509.Certificate) {
		c.URIs = nil
		for _, u := range uris {
			parsed, err := url.Parse(u)
			if err != nil {
				panic(err)
			}
			c.URIs = append(c.URIs, parsed)
		}
	}
}

// WithDNSNames adds DNS SANs to the leaf.
func WithDNSNames(names ...string) MintOption {
	return func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, names...) }
}

// Mint issues a leaf for id with a fresh P-256 key, valid for an hour unless
// an option says otherwise. The returned SVID's ID field is id even when
// options remove or change the URI SAN, so tests can present malformed
// certificates.
func (ca *CA) Mint(id spiffeid.ID, opts ...MintOption) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	for _, o := range opts {
		o(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}, nil
}

// MustMint is Mint that panics on error.
func (ca *CA) MustMint(id spiffeid.ID, opts ...MintOption) *x509svid.SVID {
	s, err := ca.Mint(id, opts...)
	if err != nil {
		panic(err)
	}
	return s
}

// Source is an in-memory identity.SVIDSource. Identities set with Set are
// served as they are; with a CA, other identities are minted on first use
// and cached.
type Source struct {
	CA *CA // optional: mint identities not Set explicitly

	mu    sync.Mutex
	svids map[spiffeid.ID]*x509svid.SVID
	calls int
}

var _ identity.SVIDSource = (*Source)(nil)

// NewSource returns a source that mints from ca (nil: only what is Set).
func NewSource(ca *CA) *Source { return &Source{CA: ca} }

// Set makes s serve svid for id (nil removes it).
func (s *Source) Set(id spiffeid.ID, svid *x509svid.SVID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.svids == nil {
		s.svids = map[spiffeid.ID]*x509svid.SVID{}
	}
	if svid == nil {
		delete(s.svids, id)
		return
	}
	s.svids[id] = svid
}

// Calls reports how many times GetX509SVIDFor was called.
func (s *Source) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// GetX509SVIDFor implements identity.SVIDSource.
func (s *Source) GetX509SVIDFor(_ context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if svid, ok := s.svids[id]; ok {
		return svid, nil
	}
	if s.CA == nil {
		return nil, fmt.Errorf("%w for %s", identity.ErrNoCertificate, id)
	}
	svid, err := s.CA.Mint(id)
	if err != nil {
		return nil, err
	}
	if s.svids == nil {
		s.svids = map[spiffeid.ID]*x509svid.SVID{}
	}
	s.svids[id] = svid
	return svid, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

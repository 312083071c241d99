package identitytest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
)

// Intermediate is an intermediate CA under a root: what an operator's PKI
// hands to `ambit ca`.
type Intermediate struct {
	Root *CA
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewIntermediate issues an intermediate CA certificate from ca, valid as
// long as the root.
func (ca *CA) NewIntermediate() (*Intermediate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"ambit test"}, CommonName: "test intermediate " + ca.TrustDomain.Name()},
		NotBefore:             ca.Cert.NotBefore,
		NotAfter:              ca.Cert.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{ca.TrustDomain.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Intermediate{Root: ca, Cert: cert, Key: key}, nil
}

// FakeSigner is an identity.Signer backed by a test CA (or an
// intermediate): it signs any well-formed CSR for the ID asked, with
// validity from its Clock. Set Fail to make it refuse.
type FakeSigner struct {
	CA           *CA           // required unless Intermediate is set
	Intermediate *Intermediate // optional: sign with it and append it to the chain
	TTL          time.Duration // optional, default 1h
	Clock        identity.Clock

	mu    sync.Mutex
	err   error
	calls int
	gate  chan struct{}
}

var _ identity.Signer = (*FakeSigner)(nil)

// SetError makes every following Sign fail with err (nil: succeed again).
func (s *FakeSigner) SetError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// SetGate makes Sign block until gate is closed (nil: no blocking).
func (s *FakeSigner) SetGate(gate chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate = gate
}

// Calls reports how many times Sign was called.
func (s *FakeSigner) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Sign implements identity.Signer.
func (s *FakeSigner) Sign(ctx context.Context, csrDER []byte, id spiffeid.ID) ([]*x509.Certificate, error) {
	s.mu.Lock()
	s.calls++
	err, gate := s.err, s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != id.String() {
		return nil, errors.New("fake signer: CSR SAN differs from requested ID")
	}
	ttl := s.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	now := time.Now()
	if s.Clock != nil {
		now = s.Clock.Now()
	}
	parent, key := s.caCert()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, csr.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("fake signer: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	chain := []*x509.Certificate{leaf}
	if s.Intermediate != nil {
		chain = append(chain, s.Intermediate.Cert)
	}
	return chain, nil
}

func (s *FakeSigner) caCert() (*x509.Certificate, crypto.Signer) {
	if s.Intermediate != nil {
		return s.Intermediate.Cert, s.Intermediate.Key
	}
	return s.CA.Cert, s.CA.Key
}

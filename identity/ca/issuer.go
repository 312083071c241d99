package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
)

// IssuerConfig configures an Issuer.
type IssuerConfig struct {
	// Chain is the signing CA certificate first, then its issuers up to (and
	// optionally including) the root. Required.
	Chain []*x509.Certificate
	// Key is the signing certificate's private key. Required.
	Key crypto.Signer
	// TTL of issued certificates. Optional, default 24h.
	TTL time.Duration
	// Backdate moves NotBefore into the past for clock skew. Optional,
	// default 5m.
	Backdate time.Duration
	// Clock is the time source. Optional.
	Clock identity.Clock
}

// Issuer signs workload certificates with an intermediate (or, for
// development, a self-generated root).
type Issuer struct {
	cfg    IssuerConfig
	served []*x509.Certificate // chain sent after the leaf: no self-signed root
	roots  []*x509.Certificate // self-signed certificates in Chain
}

// NewIssuer checks cfg: the signing certificate is a CA allowed to sign
// certificates, the key matches it, each certificate of the chain is signed
// by the next.
func NewIssuer(cfg IssuerConfig) (*Issuer, error) {
	if len(cfg.Chain) == 0 || cfg.Key == nil {
		return nil, errors.New("ca: issuer: signing certificate and key required")
	}
	signing := cfg.Chain[0]
	if !signing.BasicConstraintsValid || !signing.IsCA || signing.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("ca: issuer: signing certificate is not a CA with keyCertSign")
	}
	pub, ok := cfg.Key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(signing.PublicKey) {
		return nil, errors.New("ca: issuer: private key does not match the signing certificate")
	}
	for i := 0; i+1 < len(cfg.Chain); i++ {
		if err := cfg.Chain[i].CheckSignatureFrom(cfg.Chain[i+1]); err != nil {
			return nil, fmt.Errorf("ca: issuer: chain certificate %d is not signed by certificate %d: %w", i, i+1, err)
		}
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.Backdate <= 0 {
		cfg.Backdate = 5 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = identity.RealClock{}
	}
	is := &Issuer{cfg: cfg}
	for _, c := range cfg.Chain {
		if isSelfSigned(c) {
			is.roots = append(is.roots, c)
			continue
		}
		is.served = append(is.served, c)
	}
	return is, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil && string(c.RawIssuer) == string(c.RawSubject)
}

// NewDevRoot generates a self-signed ECDSA P-256 root for td, valid for
// ten years: the development fallback when no intermediate is configured.
func NewDevRoot(td spiffeid.TrustDomain, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{"ambit development CA"}, CommonName: "ambit dev root " + td.Name()},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// Roots are the self-signed certificates of the configured chain (the
// trust anchors, when the operator included the root).
func (is *Issuer) Roots() []*x509.Certificate { return is.roots }

// SigningCert is the certificate that signs leaves.
func (is *Issuer) SigningCert() *x509.Certificate { return is.cfg.Chain[0] }

// TTL is the lifetime of issued certificates.
func (is *Issuer) TTL() time.Duration { return is.cfg.TTL }

// Issue signs a workload leaf for pub and id and returns leaf + served
// chain. The leaf: URI SAN id only, random 128-bit serial, NotBefore
// back-dated, NotAfter now+TTL (never past the signing certificate's),
// key usage digitalSignature, EKU server and client auth, not a CA.
func (is *Issuer) Issue(pub crypto.PublicKey, id spiffeid.ID) ([]*x509.Certificate, error) {
	tmpl := is.leafTemplate(id, is.cfg.TTL)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	return is.sign(tmpl, pub)
}

func (is *Issuer) leafTemplate(id spiffeid.ID, ttl time.Duration) *x509.Certificate {
	now := is.cfg.Clock.Now()
	notAfter := now.Add(ttl)
	if sa := is.SigningCert().NotAfter; notAfter.After(sa) {
		notAfter = sa
	}
	return &x509.Certificate{
		SerialNumber:          randomSerial(),
		NotBefore:             now.Add(-is.cfg.Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{id.URL()},
	}
}

func (is *Issuer) sign(tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.SigningCert(), pub, is.cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	return append([]*x509.Certificate{leaf}, is.served...), nil
}

// ServingCertificate mints the CA's own TLS serving certificate: a fresh
// P-256 key, URI SAN id (so clients verify it against the trust bundle
// like any workload), the given DNS names, EKU server auth.
func (is *Issuer) ServingCertificate(id spiffeid.ID, dnsNames []string, ttl time.Duration) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := is.leafTemplate(id, ttl)
	tmpl.DNSNames = dnsNames
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	chain, err := is.sign(tmpl, key.Public())
	if err != nil {
		return nil, err
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// randomSerial is a uniformly random 128-bit positive serial.
func randomSerial() *big.Int {
	for {
		n, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		if n.Sign() > 0 {
			return n
		}
	}
}

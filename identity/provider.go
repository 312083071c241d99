package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Signer is a certificate authority that signs certificate signing
// requests: the built-in CA's client (package identity/ca) implements it.
// Sign returns the issued chain, leaf first, followed by the intermediates
// the CA serves (never the root). Sign must honour ctx.
type Signer interface {
	Sign(ctx context.Context, csrDER []byte, id spiffeid.ID) ([]*x509.Certificate, error)
}

// Provider is where the Manager gets a fresh SVID for an identity: the one
// interface behind which all of ambit's certificate sources sit.
//   - CSRProvider: a key generated here, signed by a Signer (the built-in CA).
//   - FileProvider: certificate, key and bundle from files.
//   - identity/workloadapi.Provider: a SPIFFE Workload API endpoint (SPIRE).
//
// The Manager checks whatever a Provider returns before using it.
type Provider interface {
	FetchSVID(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error)
}

// CSRProvider generates an ECDSA P-256 key per request, sends a CSR with an
// empty subject and exactly one URI SAN (the SPIFFE ID) to Signer, and
// pairs the issued chain with the key. The key never leaves the process.
type CSRProvider struct {
	Signer Signer // required
}

// FetchSVID implements Provider.
func (p CSRProvider) FetchSVID(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	csr, err := NewCSR(key, id)
	if err != nil {
		return nil, err
	}
	chain, err := p.Signer.Sign(ctx, csr, id)
	if err != nil {
		return nil, fmt.Errorf("identity: sign %s: %w", id, err)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("identity: sign %s: CA returned no certificate", id)
	}
	if !publicKeyEqual(chain[0], &key.PublicKey) {
		return nil, fmt.Errorf("identity: sign %s: issued certificate is not for the key we sent", id)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}

func publicKeyEqual(c *x509.Certificate, pub *ecdsa.PublicKey) bool {
	k, ok := c.PublicKey.(*ecdsa.PublicKey)
	return ok && k.Equal(pub)
}

// NewCSR builds a DER certificate request for id: empty subject, the SPIFFE
// ID as the only SAN.
func NewCSR(key *ecdsa.PrivateKey, id spiffeid.ID) ([]byte, error) {
	tmpl := &x509.CertificateRequest{
		SignatureAlgorithm: x509.ECDSAWithSHA256,
		URIs:               []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("identity: create CSR for %s: %w", id, err)
	}
	return der, nil
}

// CheckSVID is what the Manager requires of every SVID before it serves it:
// the leaf's only URI SAN is exactly id, the chain verifies to bundle at
// time now, the leaf is not a CA and carries key usage digitalSignature and
// extended key usages server and client auth, and the private key matches.
func CheckSVID(svid *x509svid.SVID, id spiffeid.ID, bundle x509bundle.Source, now time.Time) error {
	if svid == nil || len(svid.Certificates) == 0 {
		return fmt.Errorf("identity: check %s: no certificate", id)
	}
	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 {
		return fmt.Errorf("identity: check %s: leaf has %d URI SANs, want exactly 1", id, len(leaf.URIs))
	}
	got, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return fmt.Errorf("identity: check %s: leaf SAN: %w", id, err)
	}
	if got != id {
		return fmt.Errorf("identity: check %s: leaf is for %s", id, got)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("identity: check %s: leaf lacks key usage digitalSignature", id)
	}
	var server, client bool
	for _, u := range leaf.ExtKeyUsage {
		server = server || u == x509.ExtKeyUsageServerAuth
		client = client || u == x509.ExtKeyUsageClientAuth
	}
	if !server || !client {
		return fmt.Errorf("identity: check %s: leaf lacks extended key usage server and client auth", id)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(now)); err != nil {
		return fmt.Errorf("identity: check %s: %w", id, err)
	}
	if svid.PrivateKey == nil {
		return fmt.Errorf("identity: check %s: no private key", id)
	}
	pub, ok := svid.PrivateKey.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return fmt.Errorf("identity: check %s: private key does not match the leaf", id)
	}
	return nil
}

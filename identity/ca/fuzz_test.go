package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"testing"

	"github.com/ambit-mesh/ambit/identity/ca"
)

// FuzzCheckCSR feeds arbitrary bytes to the CSR checks: they must never
// panic, and whatever passes must satisfy every rule.
func FuzzCheckCSR(f *testing.F) {
	want := wl("shop", "web")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{want.URL()}}, key)
	dns, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{want.URL()}, DNSNames: []string{"x"}}, key)
	f.Add(good)
	f.Add(dns)
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := ca.CheckCSR(der, want)
		if err != nil {
			if ca.ReasonOf(err) == ca.ReasonInternal {
				t.Fatalf("denial without a reason: %v", err)
			}
			return
		}
		if len(der) > ca.MaxCSRBytes || len(csr.URIs) != 1 || csr.URIs[0].String() != want.String() ||
			len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 || csr.CheckSignature() != nil {
			t.Fatalf("accepted a CSR that breaks the rules: %+v", csr)
		}
	})
}

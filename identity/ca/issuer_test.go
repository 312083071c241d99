package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/identity/identitytest"
)

func TestIssuerRefusesBadSigningMaterial(t *testing.T) {
	root := identitytest.MustCA("cluster.local")
	inter, _ := root.NewIntermediate()
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := root.MustMint(wl("a", "b"))
	unrelated := identitytest.MustCA("cluster.local")
	cases := map[string]ca.IssuerConfig{
		"leaf as signing cert": {Chain: leaf.Certificates, Key: leaf.PrivateKey},
		"key mismatch":         {Chain: []*x509.Certificate{inter.Cert}, Key: other},
		"broken chain":         {Chain: []*x509.Certificate{inter.Cert, unrelated.Cert}, Key: inter.Key},
		"no key":               {Chain: []*x509.Certificate{inter.Cert}},
	}
	for name, cfg := range cases {
		if _, err := ca.NewIssuer(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestDevRootIssuer(t *testing.T) {
	root, key, err := ca.NewDevRoot(td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.NewIssuer(ca.IssuerConfig{Chain: []*x509.Certificate{root}, Key: key, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(is.Roots()) != 1 || !is.Roots()[0].Equal(root) {
		t.Fatal("dev root not reported as a root")
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := is.Issue(k.Public(), wl("shop", "web"))
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 1 {
		t.Fatalf("chain of %d, want the leaf only (root is never served)", len(chain))
	}
	store, _ := identity.NewBundleStore(identity.BundleConfig{TrustDomain: td, Roots: is.Roots()})
	if _, _, err := x509svid.Verify(chain, store); err != nil {
		t.Fatal(err)
	}
}

func TestIssuerClampsToSigningCertExpiry(t *testing.T) {
	root := identitytest.MustCA("cluster.local") // valid for 24h
	inter, _ := root.NewIntermediate()
	is, err := ca.NewIssuer(ca.IssuerConfig{Chain: []*x509.Certificate{inter.Cert}, Key: inter.Key, TTL: 1000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := is.Issue(k.Public(), wl("shop", "web"))
	if err != nil {
		t.Fatal(err)
	}
	if chain[0].NotAfter.After(inter.Cert.NotAfter) {
		t.Fatal("leaf outlives its issuer")
	}
}

func TestLoadSigningFiles(t *testing.T) {
	root := identitytest.MustCA("cluster.local")
	inter, _ := root.NewIntermediate()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, identity.EncodePEMCertificates([]*x509.Certificate{inter.Cert, root.Cert}), 0o600)
	for name, enc := range map[string]func() *pem.Block{
		"pkcs8": func() *pem.Block {
			b, _ := x509.MarshalPKCS8PrivateKey(inter.Key)
			return &pem.Block{Type: "PRIVATE KEY", Bytes: b}
		},
		"sec1": func() *pem.Block {
			b, _ := x509.MarshalECPrivateKey(inter.Key.(*ecdsa.PrivateKey))
			return &pem.Block{Type: "EC PRIVATE KEY", Bytes: b}
		},
	} {
		os.WriteFile(keyFile, pem.EncodeToMemory(enc()), 0o600)
		chain, key, err := ca.LoadSigningFiles(certFile, keyFile)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		is, err := ca.NewIssuer(ca.IssuerConfig{Chain: chain, Key: key})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(is.Roots()) != 1 {
			t.Fatalf("%s: root in the file not recognised", name)
		}
	}
	os.WriteFile(keyFile, []byte("garbage"), 0o600)
	if _, _, err := ca.LoadSigningFiles(certFile, keyFile); err == nil {
		t.Fatal("garbage key accepted")
	}
}

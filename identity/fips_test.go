package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"
)

func selfSigned(t *testing.T, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "k"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	var der []byte
	var err error
	// A test input that is deliberately not approved: made outside the
	// module's enforcement under GODEBUG=fips140=only.
	fips140.WithoutEnforcement(func() { der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key) })
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckFIPSCertificates(t *testing.T) {
	gen := func(f func() (crypto.Signer, error)) crypto.Signer {
		var k crypto.Signer
		var err error
		fips140.WithoutEnforcement(func() { k, err = f() })
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ec := func(c elliptic.Curve) crypto.Signer {
		return gen(func() (crypto.Signer, error) { return ecdsa.GenerateKey(c, rand.Reader) })
	}
	rsaKey := func(bits int) crypto.Signer {
		return gen(func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, bits) })
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		key crypto.Signer
		ok  bool
	}{
		"ECDSA P-256": {ec(elliptic.P256()), true},
		"ECDSA P-384": {ec(elliptic.P384()), true},
		"RSA 2048":    {rsaKey(2048), true},
		"ECDSA P-521": {ec(elliptic.P521()), false},
		"ECDSA P-224": {ec(elliptic.P224()), false},
		"RSA 1024":    {rsaKey(1024), false},
		"Ed25519":     {edKey, false},
	} {
		err := CheckFIPSCertificates([]*x509.Certificate{selfSigned(t, tc.key)})
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrNotApproved)) {
			t.Errorf("%s: %v, want ok=%v", name, err, tc.ok)
		}
	}
}

func TestCheckFIPSHello(t *testing.T) {
	good := tls.ClientHelloInfo{SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		CipherSuites:    []uint16{tls.TLS_CHACHA20_POLY1305_SHA256, tls.TLS_AES_256_GCM_SHA384},
		SupportedCurves: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP384}}
	if err := CheckFIPSHello(&good); err != nil {
		t.Fatalf("a hello offering approved choices among others: %v", err)
	}
	for name, mod := range map[string]func(*tls.ClientHelloInfo){
		"TLS 1.2 only":  func(h *tls.ClientHelloInfo) { h.SupportedVersions = []uint16{tls.VersionTLS12} },
		"ChaCha20 only": func(h *tls.ClientHelloInfo) { h.CipherSuites = []uint16{tls.TLS_CHACHA20_POLY1305_SHA256} },
		"X25519 only":   func(h *tls.ClientHelloInfo) { h.SupportedCurves = []tls.CurveID{tls.X25519} },
		"hybrids only": func(h *tls.ClientHelloInfo) {
			h.SupportedCurves = []tls.CurveID{tls.X25519MLKEM768, tls.SecP256r1MLKEM768}
		},
	} {
		h := good
		mod(&h)
		if err := CheckFIPSHello(&h); !errors.Is(err, ErrNotApproved) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestRestrictTLSToFIPS(t *testing.T) {
	called := false
	c := RestrictTLSToFIPS(&tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305},
		VerifyConnection: func(tls.ConnectionState) error { called = true; return nil }})
	if c.MinVersion != tls.VersionTLS13 || c.MaxVersion != tls.VersionTLS13 || c.CipherSuites != nil ||
		len(c.CurvePreferences) != 2 || c.CurvePreferences[0] != tls.CurveP256 || c.CurvePreferences[1] != tls.CurveP384 {
		t.Fatalf("config %+v", c)
	}
	err := c.VerifyConnection(tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256, CurveID: tls.X25519})
	if !called || !errors.Is(err, ErrNotApproved) {
		t.Fatalf("VerifyConnection: called=%v err=%v", called, err)
	}
}

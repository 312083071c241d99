package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fixture holds a readable token and a valid bundle in a temporary directory.
type fixture struct {
	dir, token, bundle string
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	dir := t.TempDir()
	fx := fixture{dir: dir, token: filepath.Join(dir, "token"), bundle: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(fx.token, []byte("eyJhbGciOiJSUzI1NiJ9.e30.sig"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fx.bundle, selfSignedPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return fx
}

// write creates a file in the fixture's directory.
func (fx fixture) write(t testing.TB, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(fx.dir, name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// args returns the smallest valid command line: the required flags and the
// fixture's files.
func (fx fixture) args(extra ...string) []string {
	return append([]string{
		"--ca-address=https://ambit-ca.ambit-system.svc:15012",
		"--ca-token-file=" + fx.token,
		"--bundle-file=" + fx.bundle,
		"--node-name=node-1",
		"--root-namespace=ambit-system",
	}, extra...)
}

// valid returns a hand-built valid Config using the fixture's files.
func (fx fixture) valid() Config {
	c := Default()
	c.CAAddress = "https://ambit-ca.ambit-system.svc:15012"
	c.CATokenFile = fx.token
	c.BundleFile = fx.bundle
	c.NodeName = "node-1"
	c.RootNamespace = "ambit-system"
	return c
}

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func selfSignedPEM(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

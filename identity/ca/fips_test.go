package ca_test

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/identity/ca/catest"
)

// The CA's server and client in the FIPS mode profile: certificates are
// issued over TLS 1.3, AES-GCM, P-256; a client offering only X25519 or
// ChaCha20 is refused in the handshake. `make test-fips` runs this under
// GODEBUG=fips140=only too.
func TestFIPSProfile(t *testing.T) {
	logs := &syncBuf{}
	env, err := catest.Start(catest.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), FIPS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	env.Pods.Add("node-a", "shop", "web")
	client, err := env.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	web := wl("shop", "web")
	csr := csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{web.URL()}})
	chain, err := client.Sign(ctxT(t), csr, web)
	if err != nil {
		t.Fatalf("sign over the FIPS profile: %v", err)
	}
	if err := identity.CheckFIPSCertificates(chain); err != nil {
		t.Fatalf("issued chain: %v", err)
	}

	host := strings.TrimPrefix(env.URL, "https://")
	dial := func(c *tls.Config) (tls.ConnectionState, error) {
		c.InsecureSkipVerify = true // the session's parameters are under test, not the chain
		conn, err := tls.Dial("tcp", host, c)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer conn.Close()
		return conn.ConnectionState(), nil
	}
	cs, err := dial(identity.RestrictTLSToFIPS(&tls.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	if cs.Version != tls.VersionTLS13 || cs.CurveID != tls.CurveP256 || cs.CipherSuite != tls.TLS_AES_128_GCM_SHA256 {
		t.Fatalf("negotiated %s %s %s", tls.VersionName(cs.Version), cs.CurveID, tls.CipherSuiteName(cs.CipherSuite))
	}
	if _, err := dial(&tls.Config{CurvePreferences: []tls.CurveID{tls.X25519MLKEM768}}); err == nil {
		t.Fatal("a client offering only X25519MLKEM768 was served")
	}
	// The server logs the handshake error after the client has read the
	// alert: wait for it.
	want := "the client offers key exchange groups [X25519MLKEM768], none of [CurveP256 CurveP384]"
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("CA log lacks the refusal:\n%s", logs.String())
		}
	}

	// A FIPS client still reaches a CA in the default profile.
	plain, err := catest.Start(catest.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.Pods.Add("node-a", "shop", "web")
	fc, err := ca.NewClient(ca.ClientConfig{URL: plain.URL, TokenFile: plain.TokenFile, Bundle: plain.Bundle, ServerID: plain.ServerID, FIPS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if _, err := fc.Sign(ctxT(t), csr, web); err != nil {
		t.Fatalf("FIPS client, default CA: %v", err)
	}
}

//go:debug rsa1024min=0

package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/identity/ca/catest"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func wl(ns, sa string) spiffeid.ID {
	id, err := identity.Workload(td, ns, sa)
	if err != nil {
		panic(err)
	}
	return id
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startEnv(t testing.TB, mut func(*ca.Config)) (*catest.Env, *syncBuf) {
	t.Helper()
	logs := &syncBuf{}
	env, err := catest.Start(catest.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewJSONHandler(logs, nil)), Mutate: mut})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env, logs
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func csrFor(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func uris(ids ...string) []*url.URL {
	var out []*url.URL
	for _, s := range ids {
		u, _ := url.Parse(s)
		out = append(out, u)
	}
	return out
}

func TestIssueOverHTTPS(t *testing.T) {
	env, logs := startEnv(t, nil)
	env.Pods.Add("node-a", "shop", "web")
	client, err := env.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	id := wl("shop", "web")
	before := time.Now()
	svid, err := identity.CSRProvider{Signer: client}.FetchSVID(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.CheckSVID(svid, id, env.Bundle, time.Now()); err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if len(svid.Certificates) != 2 || !svid.Certificates[1].Equal(env.Intermediate.Cert) {
		t.Fatalf("chain: %d certificates, want leaf + intermediate (root not served)", len(svid.Certificates))
	}
	if len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Fatalf("SANs: %v %v %v %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Fatalf("leaf IsCA=%v KeyUsage=%v", leaf.IsCA, leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 {
		t.Fatalf("EKU %v", leaf.ExtKeyUsage)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Fatalf("serial %v", leaf.SerialNumber)
	}
	if d := before.Sub(leaf.NotBefore); d < 4*time.Minute || d > 6*time.Minute {
		t.Fatalf("NotBefore back-dated by %s, want ~5m", d)
	}
	if d := leaf.NotAfter.Sub(before); d < 24*time.Hour-time.Minute || d > 24*time.Hour+time.Minute {
		t.Fatalf("TTL %s, want 24h", d)
	}
	if leaf.Subject.String() != "" {
		t.Fatalf("subject %q copied from somewhere", leaf.Subject)
	}
	if st := env.Server.Stats(); st.Issued != 1 || len(st.Denied) != 0 {
		t.Fatalf("stats %+v", st)
	}
	line := logs.String()
	if !strings.Contains(line, `"msg":"ca: issued"`) || !strings.Contains(line, leaf.SerialNumber.Text(16)) || !strings.Contains(line, `"node":"node-a"`) {
		t.Fatalf("audit line missing: %s", line)
	}
}

// rawPost sends body with an optional token, bypassing the client.
func rawPost(t *testing.T, env *catest.Env, method, token string, body []byte) (int, ca.ErrorResponse) {
	t.Helper()
	tc := tlsconfig.TLSClientConfig(env.Bundle, tlsconfig.AuthorizeID(env.ServerID))
	tc.MinVersion = tls.VersionTLS13
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctxT(t), method, env.URL+ca.SignPath, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var er ca.ErrorResponse
	_ = json.NewDecoder(resp.Body).Decode(&er)
	return resp.StatusCode, er
}

func TestDenials(t *testing.T) {
	env, logs := startEnv(t, nil)
	env.Pods.Add("node-a", "shop", "web")
	env.Pods.Add("node-b", "shop", "db")
	env.Auth.SetError(catest.Token("revoked"), fmt.Errorf("%w: token has been invalidated", ca.ErrUnauthenticated))
	env.Auth.Set(catest.Token("other-sa"), ca.Caller{Namespace: "shop", ServiceAccount: "web", Node: "node-a"})
	env.Auth.Set(catest.Token("unbound"), ca.Caller{Namespace: catest.NodeNamespace, ServiceAccount: catest.NodeServiceAccount})
	client, err := env.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	web := wl("shop", "web")
	good := func() []byte { return csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{web.URL()}}) }
	// A deliberately weak key, made outside the module's enforcement when
	// the tests run under GODEBUG=fips140=only (make test-fips).
	var rsa512 *rsa.PrivateKey
	var rsa512CSR []byte
	fips140.WithoutEnforcement(func() {
		if rsa512, err = rsa.GenerateKey(rand.Reader, 512); err == nil {
			rsa512CSR = csrFor(t, rsa512, &x509.CertificateRequest{URIs: []*url.URL{web.URL()}})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	bc, _ := asn1.Marshal(struct{ IsCA bool }{true})
	tampered := good()
	tampered[len(tampered)-3] ^= 0xff

	type tc struct {
		name   string
		token  string // token file content ("" keeps catest.NodeAToken)
		id     spiffeid.ID
		csr    []byte
		reason ca.Reason
	}
	cases := []tc{
		{"token the authenticator refuses", catest.Token("forged"), web, good(), ca.ReasonUnauthenticated},
		{"token the authenticator revoked", catest.Token("revoked"), web, good(), ca.ReasonUnauthenticated},
		{"expired token", catest.TokenFor("node-a", time.Now().Add(-time.Second), catest.Audience), web, good(), ca.ReasonTokenExpired},
		{"wrong audience", catest.TokenFor("node-a", catest.FarFuture, "https://kubernetes.default.svc"), web, good(), ca.ReasonTokenAudience},
		{"no audience", catest.TokenFor("node-a", catest.FarFuture), web, good(), ca.ReasonTokenAudience},
		{"not a JWT", "node-a-token", web, good(), ca.ReasonTokenMalformed},
		{"JWT of garbage", "eyJhbGciOiJSUzI1NiJ9.forged.sig", web, good(), ca.ReasonTokenMalformed},
		{"token over the size limit", catest.Token(strings.Repeat("x", ca.DefaultMaxTokenBytes)), web, good(), ca.ReasonTokenMalformed},
		{"token of another service account", catest.Token("other-sa"), web, good(), ca.ReasonWrongServiceAccount},
		{"token bound to no node", catest.Token("unbound"), web, good(), ca.ReasonNoNode},
		{"pod of another node", "", wl("shop", "db"), csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{wl("shop", "db").URL()}}), ca.ReasonNoPodOnNode},
		{"identity with no pod anywhere", "", wl("shop", "ghost"), csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{wl("shop", "ghost").URL()}}), ca.ReasonNoPodOnNode},
		{"foreign trust domain", "", spiffeid.RequireFromString("spiffe://evil.example/ns/shop/sa/web"), csrFor(t, p256(t), &x509.CertificateRequest{URIs: uris("spiffe://evil.example/ns/shop/sa/web")}), ca.ReasonForeignTrustDomain},
		{"not a workload identity", "", spiffeid.RequireFromString("spiffe://cluster.local/admin"), csrFor(t, p256(t), &x509.CertificateRequest{URIs: uris("spiffe://cluster.local/admin")}), ca.ReasonBadIdentity},
		{"malformed CSR", "", web, []byte("not a certificate request"), ca.ReasonCSRMalformed},
		{"empty CSR", "", web, nil, ca.ReasonCSRMalformed},
		{"oversized CSR", "", web, bytes.Repeat([]byte{0x30}, ca.MaxCSRBytes+1), ca.ReasonCSRTooLarge},
		{"tampered signature", "", web, tampered, ca.ReasonCSRSignature},
		{"extra URI SAN", "", web, csrFor(t, p256(t), &x509.CertificateRequest{URIs: uris(web.String(), "spiffe://cluster.local/ns/shop/sa/admin")}), ca.ReasonExtraSAN},
		{"DNS SAN", "", web, csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{web.URL()}, DNSNames: []string{"web.shop.svc"}}), ca.ReasonExtraSAN},
		{"e-mail SAN", "", web, csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{web.URL()}, EmailAddresses: []string{"a@b.c"}}), ca.ReasonExtraSAN},
		{"no SAN", "", web, csrFor(t, p256(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "web"}}), ca.ReasonExtraSAN},
		{"different ID than asked", "", web, csrFor(t, p256(t), &x509.CertificateRequest{URIs: uris("spiffe://cluster.local/ns/shop/sa/admin")}), ca.ReasonSANMismatch},
		{"RSA 512", "", web, rsa512CSR, ca.ReasonWeakKey},
		{"ECDSA P-384", "", web, csrFor(t, p384, &x509.CertificateRequest{URIs: []*url.URL{web.URL()}}), ca.ReasonWeakKey},
		{"asks to be a CA", "", web, csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{web.URL()}, ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}}}), ca.ReasonCARequested},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := c.token
			if tok == "" {
				tok = catest.NodeAToken
			}
			if err := os.WriteFile(env.TokenFile, []byte(tok), 0o600); err != nil {
				t.Fatal(err)
			}
			before := env.Server.Stats()
			chain, err := client.Sign(ctxT(t), c.csr, c.id)
			var re *ca.RemoteError
			if !errors.As(err, &re) || re.Reason != c.reason || re.Status != c.reason.Status() || re.Message == "" {
				t.Fatalf("got chain=%d err=%v, want denial %s", len(chain), err, c.reason)
			}
			after := env.Server.Stats()
			if after.Issued != before.Issued {
				t.Fatal("a certificate was issued")
			}
			if after.Denied[c.reason] != before.Denied[c.reason]+1 {
				t.Fatalf("denial %s not counted: %v", c.reason, after.Denied)
			}
			if !strings.Contains(logs.String(), `"reason":"`+string(c.reason)+`"`) {
				t.Fatalf("no audit line for %s", c.reason)
			}
		})
	}
	if err := os.WriteFile(env.TokenFile, []byte(catest.NodeAToken), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("missing token", func(t *testing.T) {
		body, _ := json.Marshal(ca.SignRequest{SpiffeID: web.String(), CSR: good()})
		st, er := rawPost(t, env, http.MethodPost, "", body)
		if st != http.StatusUnauthorized || er.Reason != ca.ReasonNoToken {
			t.Fatalf("%d %+v", st, er)
		}
	})
	t.Run("GET", func(t *testing.T) {
		st, er := rawPost(t, env, http.MethodGet, catest.NodeAToken, nil)
		if st != http.StatusMethodNotAllowed || er.Reason != ca.ReasonMethod {
			t.Fatalf("%d %+v", st, er)
		}
	})
	t.Run("body over limit", func(t *testing.T) {
		st, er := rawPost(t, env, http.MethodPost, catest.NodeAToken, bytes.Repeat([]byte("x"), ca.MaxRequestBytes+10))
		if st != http.StatusRequestEntityTooLarge || er.Reason != ca.ReasonTooLarge {
			t.Fatalf("%d %+v", st, er)
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		st, er := rawPost(t, env, http.MethodPost, catest.NodeAToken, []byte("{"))
		if st != http.StatusBadRequest || er.Reason != ca.ReasonBadRequest {
			t.Fatalf("%d %+v", st, er)
		}
	})
	if st := env.Server.Stats(); st.Issued != 0 {
		t.Fatalf("issued %d certificates during denials", st.Issued)
	}
	// And the good request still works with the same client.
	if _, err := client.Sign(ctxT(t), good(), web); err != nil {
		t.Fatal(err)
	}
}

func TestPodMovedNodes(t *testing.T) {
	env, _ := startEnv(t, nil)
	client, _ := env.Client()
	defer client.Close()
	id := wl("shop", "mover")
	env.Pods.Add("node-a", "shop", "mover")
	p := identity.CSRProvider{Signer: client}
	if _, err := p.FetchSVID(ctxT(t), id); err != nil {
		t.Fatal(err)
	}
	env.Pods.Remove("node-a", "shop", "mover")
	env.Pods.Add("node-b", "shop", "mover")
	_, err := p.FetchSVID(ctxT(t), id)
	var re *ca.RemoteError
	if !errors.As(err, &re) || re.Reason != ca.ReasonNoPodOnNode {
		t.Fatalf("after the pod moved: %v", err)
	}
	env.Pods.SetError(errors.New("informer not synced"))
	_, err = p.FetchSVID(ctxT(t), id)
	if !errors.As(err, &re) || re.Reason != ca.ReasonLookupFailed || re.Status != http.StatusServiceUnavailable {
		t.Fatalf("lookup failure: %v", err)
	}
}

func TestRateLimitPerNode(t *testing.T) {
	env, _ := startEnv(t, func(c *ca.Config) { c.BurstPerNode = 3; c.RatePerNode = 0.001 })
	env.Pods.Add("node-a", "shop", "web")
	env.Pods.Add("node-b", "shop", "web")
	env.Auth.Set(catest.Token("node-b"), ca.Caller{Namespace: catest.NodeNamespace, ServiceAccount: catest.NodeServiceAccount, Node: "node-b"})
	client, _ := env.Client()
	defer client.Close()
	p := identity.CSRProvider{Signer: client}
	for i := range 3 {
		if _, err := p.FetchSVID(ctxT(t), wl("shop", "web")); err != nil {
			t.Fatalf("request %d within burst: %v", i, err)
		}
	}
	_, err := p.FetchSVID(ctxT(t), wl("shop", "web"))
	var re *ca.RemoteError
	if !errors.As(err, &re) || re.Reason != ca.ReasonRateLimited || re.Status != http.StatusTooManyRequests {
		t.Fatalf("over the limit: %v", err)
	}
	// Another node has its own bucket.
	if err := os.WriteFile(env.TokenFile, []byte(catest.Token("node-b")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.FetchSVID(ctxT(t), wl("shop", "web")); err != nil {
		t.Fatalf("node-b limited by node-a's bucket: %v", err)
	}
}

func TestClientVerifiesServer(t *testing.T) {
	env, _ := startEnv(t, nil)
	env.Pods.Add("node-a", "shop", "web")
	wrongID, _ := ca.NewClient(ca.ClientConfig{URL: env.URL, TokenFile: env.TokenFile, Bundle: env.Bundle, ServerID: wl("ambit-system", "impostor")})
	if _, err := (identity.CSRProvider{Signer: wrongID}).FetchSVID(ctxT(t), wl("shop", "web")); err == nil {
		t.Fatal("client accepted a CA serving another identity")
	}
	other, _ := catest.Start(catest.Options{Dir: t.TempDir()})
	defer other.Close()
	wrongRoot, _ := ca.NewClient(ca.ClientConfig{URL: env.URL, TokenFile: env.TokenFile, Bundle: other.Bundle, ServerID: env.ServerID})
	if _, err := (identity.CSRProvider{Signer: wrongRoot}).FetchSVID(ctxT(t), wl("shop", "web")); err == nil {
		t.Fatal("client accepted a CA chaining to an untrusted root")
	}
	if env.Server.Stats().Issued != 0 {
		t.Fatal("request reached the CA through an unverified connection")
	}
	if _, err := ca.NewClient(ca.ClientConfig{URL: "http://x", TokenFile: "t", Bundle: env.Bundle, ServerID: env.ServerID}); err == nil {
		t.Fatal("plain http URL accepted")
	}
}

func TestHealth(t *testing.T) {
	env, _ := startEnv(t, nil)
	h := env.Server.HealthHandler()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		rec := newRecorder()
		h.ServeHTTP(rec, mustReq(path))
		if rec.status != want {
			t.Errorf("%s: %d", path, rec.status)
		}
	}
	nr := &notReady{}
	srv, err := ca.NewServer(ca.Config{TrustDomain: td, Issuer: env.Issuer, Authenticator: env.Auth, Pods: nr,
		NodeNamespace: "a", NodeServiceAccount: "b", TokenAudiences: []string{catest.Audience}})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	srv.HealthHandler().ServeHTTP(rec, mustReq("/readyz"))
	if rec.status != http.StatusServiceUnavailable || !strings.Contains(rec.body.String(), "not synced") {
		t.Fatalf("readyz with unsynced locator: %d %s", rec.status, rec.body.String())
	}
}

type notReady struct{ catest.Pods }

func (*notReady) Ready() error { return errors.New("pod informer not synced") }

type recorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder                    { return &recorder{h: http.Header{}, status: 200} }
func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *recorder) WriteHeader(s int)           { r.status = s }

func mustReq(path string) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "http://ca"+path, io.NopCloser(strings.NewReader("")))
	return r
}

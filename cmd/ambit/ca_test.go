package main

import (
	"bytes"
	"crypto/fips140"
	"crypto/tls"
	"log/slog"
	"net"

	"context"
	"github.com/prometheus/client_golang/prometheus"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
)

func TestCABadInputExits2WithOneLine(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: x}}]
current-context: c
`), 0o600)
	leafFile := filepath.Join(dir, "leaf.pem")
	ca := identitytest.MustCA("cluster.local")
	os.WriteFile(leafFile, identity.EncodePEMCertificates(ca.MustMint(spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b")).Certificates), 0o600)
	kc := "-kubeconfig=" + kubeconfig
	cases := map[string][]string{
		"unknown flag":          {"-bogus", kc},
		"bad trust domain":      {"-trust-domain=Bad Domain", kc},
		"ttl too short":         {"-ttl=59s", kc},
		"bad node account":      {"-node-service-account=ambit", kc},
		"no audience":           {"-token-audience=,", kc},
		"bad listen":            {"-listen=nonsense", kc},
		"bad log level":         {"-log-level=loud", kc},
		"cert without key":      {"-signing-cert=" + leafFile, kc},
		"missing files":         {"-signing-cert=/nope", "-signing-key=/nope", kc},
		"serving id elsewhere":  {"-serving-id=spiffe://other.example/ca", kc},
		"no kubeconfig":         {"-kubeconfig=/nope"},
		"stray argument":        {kc, "extra"},
		"no review slots":       {"-max-token-reviews=0", kc},
		"review cache too long": {"-token-review-cache-ttl=10m", kc},
		"no source burst":       {"-burst-per-source=0", kc},
	}
	if !fips140.Enabled() {
		cases["fips without the FIPS runtime"] = []string{"-fips", kc}
	}
	for name, args := range cases {
		var out, errb bytes.Buffer
		code := dispatch(context.Background(), append([]string{"ca"}, args...), &out, &errb)
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "ambit ca: ") {
			t.Errorf("%s: exit %d, stderr %q", name, code, errb.String())
		}
	}
}

func TestCAHelpAndDispatch(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch(context.Background(), []string{"ca", "-h"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "-signing-cert") {
		t.Fatalf("help: %d %q", code, out.String())
	}
	out.Reset()
	if code := dispatch(context.Background(), []string{"nonsense"}, &out, &errb); code != 2 {
		t.Fatalf("unknown subcommand exit %d", code)
	}
}

// TestCADevRootWritesRootAndShutsDown runs the dev-root CA against an unreachable
// API server: it serves health and shuts down cleanly when cancelled.
func TestCADevRootWritesRootAndShutsDown(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: x}}]
current-context: c
`), 0o600)
	rootOut := filepath.Join(dir, "root.pem")
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncWriter
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"ca", "-kubeconfig=" + kubeconfig, "-listen=127.0.0.1:0", "-health-listen=127.0.0.1:0", "-dev-root-out=" + rootOut}, &out, &errb)
	}()
	waitFor(t, func() bool { return strings.Contains(errb.String(), "ambit ca serving") })
	roots, err := identity.LoadRoots(rootOut)
	if err != nil || len(roots) != 1 || !roots[0].IsCA {
		t.Fatalf("dev root file: %v", err)
	}
	if n := strings.Count(errb.String(), "DEVELOPMENT CA"); n != 1 {
		t.Fatalf("want exactly one loud development line, got %d:\n%s", n, errb.String())
	}
	if strings.Contains(errb.String(), "PRIVATE") {
		t.Fatal("key material in the log")
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d after cancel: %s", code, errb.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The CA's FIPS profile refuses a ClientHello without an approved group,
// counts it and logs it.
func TestCAFIPSRefusalCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newCAMetrics(reg)
	var logs bytes.Buffer
	c := servingTLS(true, &tls.Config{}, m, slog.New(slog.NewTextHandler(&logs, nil)))
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, err := c.GetConfigForClient(&tls.ClientHelloInfo{Conn: a, SupportedVersions: []uint16{tls.VersionTLS13},
		CipherSuites: []uint16{tls.TLS_AES_128_GCM_SHA256}, SupportedCurves: []tls.CurveID{tls.X25519}})
	if err == nil {
		t.Fatal("X25519-only hello accepted")
	}
	if v := deniedCount(t, reg, reasonTLSAlgorithms); v != 1 {
		t.Fatalf("ambit_ca_denied_total{reason=tls_algorithms} = %v", v)
	}
	if !strings.Contains(logs.String(), "key exchange groups [X25519], none of [CurveP256 CurveP384]") {
		t.Fatalf("log: %s", logs.String())
	}
	if _, err := c.GetConfigForClient(&tls.ClientHelloInfo{Conn: a, SupportedVersions: []uint16{tls.VersionTLS13},
		CipherSuites: []uint16{tls.TLS_AES_128_GCM_SHA256}, SupportedCurves: []tls.CurveID{tls.X25519, tls.CurveP256}}); err != nil {
		t.Fatalf("approved hello: %v", err)
	}
}

func deniedCount(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ambit_ca_denied_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/ambit-mesh/ambit/node/config"
)

// validConfig is a configuration that passes config.Validate.
func validConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	token, bundle := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(token, []byte("x.y.z"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse([]string{"--ca-address=https://ambit-ca.ambit-system.svc:15012", "--ca-token-file=" + token,
		"--bundle-file=" + bundle, "--node-name=node-1", "--root-namespace=ambit-system"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNewAgentRefuses: a missing client, an invalid configuration and
// --fips without the FIPS runtime are refused before anything starts.
func TestNewAgentRefuses(t *testing.T) {
	cfg := validConfig(t)
	kube := &kubernetes.Clientset{}
	if _, err := newAgent(Options{Config: cfg}); err == nil {
		t.Error("no Kube client: accepted")
	}
	bad := cfg
	bad.MetricsAddr = ":99999"
	if _, err := newAgent(Options{Config: bad, Kube: kube}); !errors.Is(err, config.ErrUsage) {
		t.Errorf("bad metrics address: %v, want ErrUsage", err)
	}
	fips := cfg
	fips.FIPS = true
	_, err := newAgent(Options{Config: fips, Kube: kube})
	if fips140.Enabled() {
		if err != nil {
			t.Errorf("--fips in FIPS mode: %v", err)
		}
	} else if !errors.Is(err, ErrFIPS) {
		t.Errorf("--fips without the FIPS runtime: %v, want ErrFIPS", err)
	}
	if _, err := newAgent(Options{Config: cfg, Kube: kube}); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

// A part that fails after a component started ends Run with its error: the
// components started before it are stopped and waited for (they used to
// keep Run waiting until the daemon was told to stop). The bound is loose:
// a fake clientset alone takes seconds with -race on a loaded machine.
func TestRunFailsAfterAComponentStarted(t *testing.T) {
	cfg := validConfig(t)
	cfg.CNIBinDir, cfg.CNIConfDir = "", ""
	cfg.IstioPolicies = true // without Options.Discovery: the policy watch refuses, after the bundle watch started
	errc := make(chan error, 1)
	start := time.Now()
	go func() {
		errc <- Run(context.Background(), Options{Config: cfg, Kube: fake.NewClientset(),
			Dynamic: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()),
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	select {
	case err := <-errc:
		t.Logf("Run returned after %v: %v", time.Since(start), err)
		if err == nil || !strings.Contains(err.Error(), "Discovery is required") {
			t.Fatalf("Run: %v, want the policy watch's refusal", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run still running 60 s after a part failed to start")
	}
}

package identity_test

import (
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
)

func writeSVID(t *testing.T, dir string, s *x509svid.SVID) (string, string) {
	t.Helper()
	certPEM, keyPEM, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c, k := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(c+".tmp", certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(c+".tmp", c); err != nil {
		t.Fatal(err)
	}
	return c, k
}

func TestFileProviderWithManager(t *testing.T) {
	ca := identitytest.MustCA("cluster.local")
	dir := t.TempDir()
	id := wl("vm", "billing")
	certFile, keyFile := writeSVID(t, dir, ca.MustMint(id))
	bundleFile := filepath.Join(dir, "bundle.pem")
	os.WriteFile(bundleFile, identity.EncodePEMCertificates([]*x509.Certificate{ca.Cert}), 0o600)
	roots, err := identity.LoadRoots(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	store, _ := identity.NewBundleStore(identity.BundleConfig{TrustDomain: td, Roots: roots})
	clock := identitytest.NewFakeClock(time.Now())
	m, err := identity.NewManager(identity.ManagerConfig{
		Provider: identity.FileProvider{CertFile: certFile, KeyFile: keyFile}, Bundle: store, Clock: clock,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Rand: func() float64 { return 0.5 },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := ctxT(t)
	first, err := m.GetX509SVIDFor(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// Renewal time with unchanged files: same certificate, checked again later.
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(clock.Pending()[0])
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if s, _ := m.GetX509SVIDFor(ctx, id); s != first {
		t.Fatal("certificate changed without new files")
	}
	// New files: picked up at the next check.
	writeSVID(t, dir, ca.MustMint(id))
	clock.Advance(clock.Pending()[0])
	waitUntil(t, func() bool { s, _ := m.GetX509SVIDFor(ctx, id); return s != nil && s != first })
	// Another identity is not in the files.
	if _, err := m.GetX509SVIDFor(ctx, wl("vm", "other")); !errors.Is(err, identity.ErrNoCertificate) || !strings.Contains(err.Error(), "holds") {
		t.Fatalf("other identity: %v", err)
	}
}

func waitUntil(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

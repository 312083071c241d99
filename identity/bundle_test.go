package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
)

// fixedSource adapts an identity.SVIDSource to go-spiffe's x509svid.Source
// for one identity, the way the tunnel does per handshake.
type fixedSource struct {
	src identity.SVIDSource
	id  spiffeid.ID
}

func (f fixedSource) GetX509SVID() (*x509svid.SVID, error) {
	return f.src.GetX509SVIDFor(context.Background(), f.id)
}

func handshake(t *testing.T, store *identity.BundleStore, client, server identity.SVIDSource, clientID, serverID spiffeid.ID) (spiffeid.ID, error) {
	t.Helper()
	scfg := tlsconfig.MTLSServerConfig(fixedSource{server, serverID}, store, tlsconfig.AuthorizeMemberOf(td))
	ccfg := tlsconfig.MTLSClientConfig(fixedSource{client, clientID}, store, tlsconfig.AuthorizeID(serverID))
	scfg.MinVersion, ccfg.MinVersion = tls.VersionTLS13, tls.VersionTLS13
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		conn *tls.Conn
		err  error
	}
	srvc := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvc <- result{err: err}
			return
		}
		tc := tls.Server(c, scfg)
		srvc <- result{tc, tc.HandshakeContext(ctxT(t))}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cerr := tls.Client(raw, ccfg).HandshakeContext(ctxT(t))
	res := <-srvc
	if res.conn != nil {
		defer res.conn.Close()
	}
	srv, serr := res.conn, res.err
	if err := errors.Join(cerr, serr); err != nil {
		return spiffeid.ID{}, err
	}
	return x509svid.IDFromCert(srv.ConnectionState().PeerCertificates[0])
}

func newMgr(t *testing.T, signer identity.Signer, store *identity.BundleStore) *identity.Manager {
	m, err := identity.NewManager(identity.ManagerConfig{
		Provider: identity.CSRProvider{Signer: signer}, Bundle: store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestRootRotation(t *testing.T) {
	oldCA := identitytest.MustCA("cluster.local")
	newCA := identitytest.MustCA("cluster.local")
	store, err := identity.NewBundleStore(identity.BundleConfig{TrustDomain: td, Roots: []*x509.Certificate{oldCA.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	oldMgr := newMgr(t, &identitytest.FakeSigner{CA: oldCA}, store)
	newMgr := newMgr(t, &identitytest.FakeSigner{CA: newCA}, store)
	client, server := wl("shop", "web"), wl("shop", "db")

	// Before rotation: only the old root is trusted.
	if _, err := newMgr.GetX509SVIDFor(ctxT(t), client); err == nil {
		t.Fatal("certificate of a not-yet-trusted root accepted")
	}
	newMgr.Forget(client)
	if _, err := handshake(t, store, oldMgr, oldMgr, client, server); err != nil {
		t.Fatalf("old/old before rotation: %v", err)
	}

	// Rotation step 1: both roots.
	if err := store.SetRoots([]*x509.Certificate{oldCA.Cert, newCA.Cert}); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]*identity.Manager{{oldMgr, oldMgr}, {oldMgr, newMgr}, {newMgr, oldMgr}, {newMgr, newMgr}} {
		got, err := handshake(t, store, pair[0], pair[1], client, server)
		if err != nil {
			t.Fatalf("handshake during rotation: %v", err)
		}
		if got != client {
			t.Fatalf("server saw %s, want %s", got, client)
		}
	}

	// Rotation step 2: old root removed. New certificates keep working, old
	// ones are refused on the next handshake.
	if err := store.SetRoots([]*x509.Certificate{newCA.Cert}); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, store, newMgr, newMgr, client, server); err != nil {
		t.Fatalf("new/new after rotation: %v", err)
	}
	if _, err := handshake(t, store, oldMgr, newMgr, client, server); err == nil {
		t.Fatal("client certificate of the removed root accepted")
	}
	s, _ := newMgr.GetX509SVIDFor(ctxT(t), client)
	if _, _, err := x509svid.Verify(s.Certificates, store); err != nil {
		t.Fatalf("new-root certificate after rotation: %v", err)
	}
}

func TestBundleAliasesAndFederation(t *testing.T) {
	ca := identitytest.MustCA("cluster.local")
	fed := identitytest.MustCA("partner.example")
	alias := spiffeid.RequireTrustDomainFromString("old.local")
	store, err := identity.NewBundleStore(identity.BundleConfig{
		TrustDomain: td, Roots: []*x509.Certificate{ca.Cert},
		Aliases:   []spiffeid.TrustDomain{alias},
		Federated: map[spiffeid.TrustDomain][]*x509.Certificate{fed.TrustDomain: {fed.Cert}},
	})
	if err != nil {
		t.Fatal(err)
	}
	aliasID := spiffeid.RequireFromString("spiffe://old.local/ns/shop/sa/web")
	if _, _, err := x509svid.Verify(ca.MustMint(aliasID).Certificates, store); err != nil {
		t.Fatalf("alias identity signed by the main root: %v", err)
	}
	b, err := store.GetX509BundleForTrustDomain(alias)
	if err != nil || b.TrustDomain() != alias || !b.HasX509Authority(ca.Cert) {
		t.Fatalf("alias bundle: %v", err)
	}
	fedID := spiffeid.RequireFromString("spiffe://partner.example/ns/a/sa/b")
	if _, _, err := x509svid.Verify(fed.MustMint(fedID).Certificates, store); err != nil {
		t.Fatalf("federated identity: %v", err)
	}
	// The federated root does not vouch for the main trust domain.
	if _, _, err := x509svid.Verify(fed.MustMint(wl("shop", "web")).Certificates, store); err == nil {
		t.Fatal("federated root accepted for the main trust domain")
	}
	if _, err := store.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("evil.example")); !errors.Is(err, identity.ErrUntrustedDomain) {
		t.Fatalf("unknown domain: %v", err)
	}
	// Dropping the alias takes effect at once.
	cfg := store.Config()
	cfg.Aliases = nil
	if err := store.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := store.GetX509BundleForTrustDomain(alias); !errors.Is(err, identity.ErrUntrustedDomain) {
		t.Fatalf("alias still trusted after removal: %v", err)
	}
}

func TestBundleUpdateRejectsInvalidAndKeepsOld(t *testing.T) {
	ca := identitytest.MustCA("cluster.local")
	store, err := identity.NewBundleStore(identity.BundleConfig{TrustDomain: td, Roots: []*x509.Certificate{ca.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	leaf := ca.MustMint(wl("a", "b")).Certificates[0]
	for name, cfg := range map[string]identity.BundleConfig{
		"no roots":       {TrustDomain: td},
		"no domain":      {Roots: []*x509.Certificate{ca.Cert}},
		"leaf as a root": {TrustDomain: td, Roots: []*x509.Certificate{leaf}},
	} {
		if err := store.Update(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if b, err := store.GetX509BundleForTrustDomain(td); err != nil || !b.HasX509Authority(ca.Cert) {
		t.Fatalf("old bundle lost after rejected updates: %v", err)
	}
}

func TestLoadRoots(t *testing.T) {
	a, b := identitytest.MustCA("cluster.local"), identitytest.MustCA("cluster.local")
	p := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(p, identity.EncodePEMCertificates([]*x509.Certificate{a.Cert, b.Cert}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots, err := identity.LoadRoots(p)
	if err != nil || len(roots) != 2 || !roots[1].Equal(b.Cert) {
		t.Fatalf("LoadRoots: %d roots, %v", len(roots), err)
	}
	if err := os.WriteFile(p, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.LoadRoots(p); err == nil {
		t.Fatal("key file accepted as roots")
	}
}

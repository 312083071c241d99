package ca_test

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/tunnel"
)

// shortTTL is the lifetime of the certificates these tests issue: renewals
// come every ~6.5 s of wall-clock time (half of TTL plus the 1 s back-dating).
const shortTTL = 12 * time.Second

func certInfo(t *testing.T, m *identity.Manager, id spiffeid.ID) identity.CertInfo {
	t.Helper()
	for _, ci := range m.Snapshot() {
		if ci.ID == id.String() {
			return ci
		}
	}
	t.Fatalf("%s not tracked", id)
	return identity.CertInfo{}
}

// TestTunnelsThroughCAOutage: the Manager, fed by the built-in CA over real
// HTTPS, is the certificate source of both ends of a real HBONE tunnel. The CA
// is stopped for longer than a whole renewal period (renewals fail and back
// off); new tunnel connections, each a fresh mTLS handshake, keep working on
// the still-valid certificates, and so does a connection opened before the
// outage. When the CA returns, renewal resumes (new serials) and new
// connections are served with the renewed certificates.
func TestTunnelsThroughCAOutage(t *testing.T) {
	src, dst := wl("shop", "web"), wl("shop", "db")
	live := startLiveCA(t, shortTTL, src, dst)
	trust, err := identity.NewBundleStore(identity.BundleConfig{TrustDomain: td, Roots: []*x509.Certificate{live.root.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := identity.NewManager(identity.ManagerConfig{Provider: identity.CSRProvider{Signer: live.client}, Bundle: trust,
		InitialBackoff: 200 * time.Millisecond, MaxBackoff: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	for _, id := range []spiffeid.ID{src, dst} {
		if err := m.Prefetch(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	rig := newTunnelRig(t, m, trust, src, dst)
	first := map[spiffeid.ID]identity.CertInfo{src: certInfo(t, m, src), dst: certInfo(t, m, dst)}
	leaf, err := rig.roundTrip(ctx, m)
	if err != nil {
		t.Fatalf("before the outage: %v", err)
	}
	if got := leaf.SerialNumber.Text(16); got != first[dst].Serial {
		t.Fatalf("server presented serial %s, manager holds %s", got, first[dst].Serial)
	}

	// A connection opened before the outage and kept across it.
	long, err := tunnel.NewClient(tunnel.ClientConfig{SVIDs: m, Bundles: trust})
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	longConn, err := long.Dial(ctx, tunnel.DialRequest{Source: src, Destination: rig.app, Tunnel: rig.hbone, Expected: []spiffeid.ID{dst}})
	if err != nil {
		t.Fatal(err)
	}
	defer longConn.Close()
	if err := echo(longConn, "before the outage"); err != nil {
		t.Fatal(err)
	}

	if err := live.stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	// The renewal period: from issuance to the scheduled renewal.
	period := max(first[src].RenewAt.Sub(first[src].NotBefore), first[dst].RenewAt.Sub(first[dst].NotBefore))
	expiry := first[src].NotAfter
	if first[dst].NotAfter.Before(expiry) {
		expiry = first[dst].NotAfter
	}
	probes := 0
	for {
		failedBoth := certInfo(t, m, src).Failures > 0 && certInfo(t, m, dst).Failures > 0
		if time.Since(down) > period && failedBoth {
			break
		}
		if time.Now().After(expiry.Add(-time.Second)) {
			t.Fatalf("certificates about to expire after %s of outage before a renewal had failed (machine too slow?)", time.Since(down))
		}
		leaf, err := rig.roundTrip(ctx, m)
		if err != nil {
			t.Fatalf("new connection after %s of CA outage: %v", time.Since(down).Round(time.Millisecond), err)
		}
		if got := leaf.SerialNumber.Text(16); got != first[dst].Serial {
			t.Fatalf("during the outage the server presented serial %s, want the first certificate %s", got, first[dst].Serial)
		}
		probes++
		time.Sleep(100 * time.Millisecond)
	}
	outage := time.Since(down)
	for _, id := range []spiffeid.ID{src, dst} {
		ci := certInfo(t, m, id)
		if ci.Serial != first[id].Serial || !ci.Usable || ci.State != identity.StateBackoff ||
			!strings.Contains(ci.LastError, "connection refused") {
			t.Fatalf("%s after %s of outage: %+v; want the first certificate served, in back-off after refused connections", id, outage, ci)
		}
	}
	if err := echo(longConn, "during the outage"); err != nil {
		t.Fatalf("connection opened before the outage: %v", err)
	}
	t.Logf("CA down %s (renewal period %s): %d new tunnel connections, all on the first certificates",
		outage.Round(time.Millisecond), period.Round(time.Millisecond), probes)

	if err := live.restart(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []spiffeid.ID{src, dst} {
		for ci := certInfo(t, m, id); ci.Serial == first[id].Serial || !ci.Usable; ci = certInfo(t, m, id) {
			if time.Now().After(ci.NotAfter) {
				t.Fatalf("%s: no renewal before expiry after the CA came back: %+v", id, ci)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	renewed := time.Since(down) - outage
	leaf, err = rig.roundTrip(ctx, m)
	if err != nil {
		t.Fatalf("after the CA came back: %v", err)
	}
	if leaf.SerialNumber.Text(16) == first[dst].Serial || !leaf.NotAfter.After(first[dst].NotAfter) {
		t.Fatalf("after renewal the server still presented the first certificate (serial %s)", first[dst].Serial)
	}
	if err := echo(longConn, "after the outage"); err != nil {
		t.Fatalf("connection opened before the outage, after it: %v", err)
	}
	if st := rig.srv.Stats(); st.TLSFailures != 0 || st.Denied != 0 {
		t.Fatalf("server saw %d TLS failures and %d denials", st.TLSFailures, st.Denied)
	}
	t.Logf("renewed %s after the CA returned", renewed.Round(time.Millisecond))
}

// TestRootRotationOverTunnels rotates the trust root under live tunnels
// through the BundleStore: old root only -> old and new -> every certificate
// reissued by a CA under the new root -> old root removed. A tunnel
// connection is opened (fresh handshake) at each step and continuously by a
// prober throughout; not one handshake fails. Control handshakes show each
// step took effect: a certificate of the new root is refused before the
// new root is added, and one of the old root is refused after it is removed.
func TestRootRotationOverTunnels(t *testing.T) {
	src, dst := wl("shop", "web"), wl("shop", "db")
	oldCA := startLiveCA(t, shortTTL, src, dst)
	newCA := startLiveCA(t, shortTTL, src, dst)
	trust, err := identity.NewBundleStore(identity.BundleConfig{TrustDomain: td, Roots: []*x509.Certificate{oldCA.root.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	signer := &switchSigner{}
	signer.set(oldCA.client)
	m, err := identity.NewManager(identity.ManagerConfig{Provider: identity.CSRProvider{Signer: signer}, Bundle: trust,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	for _, id := range []spiffeid.ID{src, dst} {
		if err := m.Prefetch(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	rig := newTunnelRig(t, m, trust, src, dst)

	// The prober opens new tunnel connections through the whole rotation.
	var (
		mu       sync.Mutex
		ok, fail int
		firstErr error
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			_, err := rig.roundTrip(ctx, m)
			mu.Lock()
			if err != nil {
				fail++
				if firstErr == nil {
					firstErr = err
				}
			} else {
				ok++
			}
			mu.Unlock()
		}
	}()
	stopProber := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopProber()

	step := func(name string, signedBy *identitytest.Intermediate) {
		t.Helper()
		leaf, err := rig.roundTrip(ctx, m)
		if err != nil {
			t.Fatalf("%s: tunnel connection failed: %v", name, err)
		}
		if err := leaf.CheckSignatureFrom(signedBy.Cert); err != nil {
			t.Fatalf("%s: server certificate not issued by the expected intermediate: %v", name, err)
		}
	}
	// refused checks a control handshake: a client presenting a certificate
	// of root r is refused by the server.
	refused := func(name string, r *identitytest.CA) {
		t.Helper()
		foreign := identitytest.NewSource(nil)
		foreign.Set(src, r.MustMint(src))
		if _, err := rig.roundTrip(ctx, foreign); !errors.Is(err, tunnel.ErrTLS) {
			t.Fatalf("%s: control handshake: err = %v, want %v", name, err, tunnel.ErrTLS)
		}
	}
	accepted := func(name string, r *identitytest.CA) {
		t.Helper()
		foreign := identitytest.NewSource(nil)
		foreign.Set(src, r.MustMint(src))
		if _, err := rig.roundTrip(ctx, foreign); err != nil {
			t.Fatalf("%s: control handshake: %v", name, err)
		}
	}

	// 1. Old root only.
	step("old root only", oldCA.inter)
	refused("old root only: new-root client", newCA.root)

	// 2. Old and new roots.
	if err := trust.SetRoots([]*x509.Certificate{oldCA.root.Cert, newCA.root.Cert}); err != nil {
		t.Fatal(err)
	}
	step("old+new roots", oldCA.inter)
	accepted("old+new roots: new-root client", newCA.root)

	// 3. The CA signs under the new root; renewals reissue every certificate.
	signer.set(newCA.client)
	for _, id := range []spiffeid.ID{src, dst} {
		deadline := time.Now().Add(2 * shortTTL)
		for {
			svid, err := m.GetX509SVIDFor(ctx, id)
			if err != nil {
				t.Fatalf("%s during reissue: %v", id, err)
			}
			if len(svid.Certificates) > 1 && svid.Certificates[1].Equal(newCA.inter.Cert) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not reissued under the new root", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	step("reissued under the new root", newCA.inter)

	// 4. Old root removed.
	if err := trust.SetRoots([]*x509.Certificate{newCA.root.Cert}); err != nil {
		t.Fatal(err)
	}
	step("new root only", newCA.inter)
	refused("new root only: old-root client", oldCA.root)
	time.Sleep(200 * time.Millisecond) // let the prober run on the final state

	stopProber()
	mu.Lock()
	defer mu.Unlock()
	if fail != 0 || ok < 20 {
		t.Fatalf("prober: %d connections ok, %d failed (first: %v)", ok, fail, firstErr)
	}
	// The server refused exactly the two control handshakes.
	if st := rig.srv.Stats(); st.TLSFailures != 2 {
		t.Fatalf("server TLS failures %d, want 2 (the control handshakes)", st.TLSFailures)
	}
	t.Logf("root rotation: %d prober connections, none failed", ok)
}

package identity_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func wl(ns, sa string) spiffeid.ID {
	id, err := identity.Workload(td, ns, sa)
	if err != nil {
		panic(err)
	}
	return id
}

type recObserver struct {
	mu      sync.Mutex
	fetches int
	errs    int
	changed map[spiffeid.ID]time.Time
}

func (o *recObserver) FetchCompleted(_ spiffeid.ID, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.fetches++
	if err != nil {
		o.errs++
	}
}

func (o *recObserver) CertificateChanged(id spiffeid.ID, notAfter time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.changed == nil {
		o.changed = map[spiffeid.ID]time.Time{}
	}
	o.changed[id] = notAfter
}

type fixture struct {
	ca     *identitytest.CA
	signer *identitytest.FakeSigner
	clock  *identitytest.FakeClock
	obs    *recObserver
	m      *identity.Manager
}

func newFixture(t *testing.T, mut func(*identity.ManagerConfig)) *fixture {
	t.Helper()
	ca := identitytest.MustCA("cluster.local")
	clock := identitytest.NewFakeClock(time.Now())
	signer := &identitytest.FakeSigner{CA: ca, TTL: time.Hour, Clock: clock}
	obs := &recObserver{}
	cfg := identity.ManagerConfig{
		Provider: identity.CSRProvider{Signer: signer},
		Bundle:   ca.Bundle(),
		Clock:    clock,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Observer: obs,
		Rand:     func() float64 { return 0 },
	}
	if mut != nil {
		mut(&cfg)
	}
	m, err := identity.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &fixture{ca: ca, signer: signer, clock: clock, obs: obs, m: m}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestManagerPrefetchThenCacheHit(t *testing.T) {
	f := newFixture(t, nil)
	id := wl("shop", "web")
	if err := f.m.Prefetch(ctxT(t), id); err != nil {
		t.Fatal(err)
	}
	s1, err := f.m.GetX509SVIDFor(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := f.m.GetX509SVIDFor(ctxT(t), id)
	if s1 != s2 {
		t.Fatal("second call did not return the cached SVID")
	}
	if s1.ID != id {
		t.Fatalf("SVID ID %s, want %s", s1.ID, id)
	}
	if err := identity.CheckSVID(s1, id, f.ca.Bundle(), f.clock.Now()); err != nil {
		t.Fatalf("served SVID fails the manager's own check: %v", err)
	}
	if n := f.signer.Calls(); n != 1 {
		t.Fatalf("signer called %d times, want 1", n)
	}
	st := f.m.Stats()
	if st.CacheHits != 2 || st.Identities != 1 || st.Fetches != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestManagerConcurrentOnDemandSharesOneFetch(t *testing.T) {
	f := newFixture(t, nil)
	id := wl("shop", "api")
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := f.m.GetX509SVIDFor(ctxT(t), id)
			if err == nil && s.ID != id {
				err = fmt.Errorf("got %s", s.ID)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.signer.Calls(); n != 1 {
		t.Fatalf("signer called %d times for 50 concurrent callers, want 1", n)
	}
}

// badProvider returns a certificate minted by a test CA with options.
type badProvider struct {
	ca   *identitytest.CA
	opts []identitytest.MintOption
	as   spiffeid.ID // mint for this ID instead (zero: the one asked)
}

func (p badProvider) FetchSVID(_ context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	if !p.as.IsZero() {
		id = p.as
	}
	return p.ca.Mint(id, p.opts...)
}

func TestManagerRejectsBadChains(t *testing.T) {
	trusted := identitytest.MustCA("cluster.local")
	other := identitytest.MustCA("cluster.local")
	now := time.Now()
	cases := []struct {
		name string
		p    identity.Provider
		want string
	}{
		{"other identity", badProvider{ca: trusted, as: wl("shop", "admin")}, "leaf is for"},
		{"untrusted root", badProvider{ca: other}, "x509svid"},
		{"two URI SANs", badProvider{ca: trusted, opts: []identitytest.MintOption{identitytest.WithURIs("spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/x/sa/y")}}, "URI SANs"},
		{"expired", badProvider{ca: trusted, opts: []identitytest.MintOption{identitytest.WithValidity(now.Add(-2*time.Hour), now.Add(-time.Hour))}}, "expired"},
		{"no client auth", badProvider{ca: trusted, opts: []identitytest.MintOption{func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }}}, "extended key usage"},
		{"no digital signature", badProvider{ca: trusted, opts: []identitytest.MintOption{func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment }}}, "digitalSignature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := identity.NewManager(identity.ManagerConfig{
				Provider: tc.p, Bundle: trusted.Bundle(),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			id := wl("shop", "web")
			_, err = m.GetX509SVIDFor(ctxT(t), id)
			if !errors.Is(err, identity.ErrNoCertificate) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrNoCertificate mentioning %q", err, tc.want)
			}
			if st := m.Stats(); st.FetchFailures == 0 {
				t.Fatalf("failure not counted: %+v", st)
			}
			if snap := m.Snapshot(); len(snap) != 1 || snap[0].Usable || snap[0].State != "backoff" {
				t.Fatalf("snapshot %+v", snap)
			}
		})
	}
}

func TestManagerFailsFastWithReasonWhenNoCert(t *testing.T) {
	f := newFixture(t, nil)
	f.signer.SetError(errors.New("ca unreachable: connection refused"))
	id := wl("shop", "web")
	_, err := f.m.GetX509SVIDFor(ctxT(t), id)
	if !errors.Is(err, identity.ErrNoCertificate) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
	// The second call does not wait for the next retry.
	start := time.Now()
	_, err = f.m.GetX509SVIDFor(ctxT(t), id)
	if !errors.Is(err, identity.ErrNoCertificate) || time.Since(start) > time.Second {
		t.Fatalf("second call: %v after %s", err, time.Since(start))
	}
	// Prefetch waits instead, until its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.m.Prefetch(ctx, id); !errors.Is(err, identity.ErrNoCertificate) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("prefetch err = %v", err)
	}
	// Other identities are unaffected once the CA works.
	f.signer.SetError(nil)
	if _, err := f.m.GetX509SVIDFor(ctxT(t), wl("shop", "other")); err != nil {
		t.Fatal(err)
	}
}

// TestManagerCADownLongerThanRenewal: the CA fails from the renewal time on
// for longer than a renewal period. The manager keeps serving the valid
// certificate, retries on the documented schedule, and recovers.
func TestManagerCADownLongerThanRenewal(t *testing.T) {
	f := newFixture(t, nil)
	ctx := ctxT(t)
	id := wl("shop", "web")
	if err := f.m.Prefetch(ctx, id); err != nil {
		t.Fatal(err)
	}
	first, _ := f.m.GetX509SVIDFor(ctx, id)
	leaf := first.Certificates[0]
	if err := f.clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Rand() == 0: renewal at 0.45 (0.5 - jitter 0.05) of the lifetime left
	// when it was obtained (the signer back-dates NotBefore).
	obtained := f.clock.Now()
	wantRenew := obtained.Add(time.Duration(0.45 * float64(leaf.NotAfter.Sub(obtained))))
	if got := f.clock.Pending()[0]; got != wantRenew.Sub(f.clock.Now()) {
		t.Fatalf("renewal timer in %s, want %s", got, wantRenew.Sub(f.clock.Now()))
	}
	f.signer.SetError(errors.New("ca: 503 unavailable"))
	f.clock.Advance(f.clock.Pending()[0])

	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 32 * time.Second, 64 * time.Second, 128 * time.Second, 150 * time.Second, 150 * time.Second}
	var down time.Duration
	renewPeriod := wantRenew.Sub(obtained)
	for i := 0; down <= renewPeriod || i < len(want); i++ {
		if err := f.clock.WaitTimers(ctx, 1); err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		got := f.clock.Pending()[0]
		w := 150 * time.Second
		if i < len(want) {
			w = want[i]
		}
		if got != w {
			t.Fatalf("back-off after failure %d is %s, want %s", i+1, got, w)
		}
		s, err := f.m.GetX509SVIDFor(ctx, id)
		if err != nil || s != first {
			t.Fatalf("after %s of CA downtime: not serving the still-valid certificate: %v", down, err)
		}
		f.clock.Advance(got)
		down += got
	}
	// Let the attempt started by the last Advance finish (it fails) before
	// looking and before the CA comes back.
	if err := f.clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	snap := f.m.Snapshot()
	if snap[0].State != identity.StateBackoff || !snap[0].Usable || snap[0].Failures < 15 || !strings.Contains(snap[0].LastError, "503") {
		t.Fatalf("snapshot during outage: %+v", snap[0])
	}
	// CA back: the next retry succeeds and a new certificate is served.
	f.signer.SetError(nil)
	if err := f.clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(f.clock.Pending()[0])
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := f.m.GetX509SVIDFor(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if s != first {
			if s.Certificates[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				t.Fatal("same serial after recovery")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new certificate after the CA returned")
		}
		time.Sleep(time.Millisecond)
	}
	if snap := f.m.Snapshot(); snap[0].State != "valid" || snap[0].Failures != 0 {
		t.Fatalf("snapshot after recovery: %+v", snap[0])
	}
}

func TestManagerExpiredDuringOutageFailsWithReason(t *testing.T) {
	f := newFixture(t, nil)
	ctx := ctxT(t)
	id := wl("shop", "web")
	if err := f.m.Prefetch(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := f.clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.signer.SetError(errors.New("ca: connection refused"))
	f.clock.Advance(f.clock.Pending()[0])
	for f.clock.Now().Before(time.Now().Add(2 * time.Hour)) {
		if err := f.clock.WaitTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(f.clock.Pending()[0])
	}
	_, err := f.m.GetX509SVIDFor(ctx, id)
	if !errors.Is(err, identity.ErrNoCertificate) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("expired certificate: err = %v", err)
	}
	if snap := f.m.Snapshot(); snap[0].Usable {
		t.Fatalf("expired certificate reported usable: %+v", snap[0])
	}
}

func TestManagerAcquireReleaseForget(t *testing.T) {
	f := newFixture(t, func(c *identity.ManagerConfig) { c.ReleaseGrace = -1 })
	ctx := ctxT(t)
	id := wl("shop", "web")
	for range 2 {
		if err := f.m.Acquire(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if snap := f.m.Snapshot(); len(snap) != 1 || snap[0].Refs != 2 {
		t.Fatalf("snapshot %+v", snap)
	}
	f.m.Release(id)
	if snap := f.m.Snapshot(); len(snap) != 1 || snap[0].Refs != 1 || !snap[0].Usable {
		t.Fatalf("after one release: %+v", snap)
	}
	f.m.Release(id)
	if snap := f.m.Snapshot(); len(snap) != 0 {
		t.Fatalf("after last release: %+v", snap)
	}
	f.obs.mu.Lock()
	na, seen := f.obs.changed[id]
	f.obs.mu.Unlock()
	if !seen || !na.IsZero() {
		t.Fatalf("observer not told the certificate went away (%v %v)", seen, na)
	}
	// Forget of a Prefetch-only identity.
	if err := f.m.Prefetch(ctx, id); err != nil {
		t.Fatal(err)
	}
	f.m.Forget(id)
	if st := f.m.Stats(); st.Identities != 0 {
		t.Fatalf("stats after forget: %+v", st)
	}
	// A failed Acquire holds no reference.
	f.signer.SetError(errors.New("down"))
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if err := f.m.Acquire(short, wl("shop", "x")); err == nil {
		t.Fatal("acquire succeeded with the CA down")
	}
	if snap := f.m.Snapshot(); len(snap) != 0 {
		t.Fatalf("failed acquire left %+v", snap)
	}
}

func TestManagerSnapshotHasNoKeys(t *testing.T) {
	f := newFixture(t, nil)
	id := wl("shop", "web")
	if err := f.m.Prefetch(ctxT(t), id); err != nil {
		t.Fatal(err)
	}
	svid, _ := f.m.GetX509SVIDFor(ctxT(t), id)
	out, err := json.Marshal(f.m.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	serial := svid.Certificates[0].SerialNumber.Text(16)
	if !strings.Contains(string(out), serial) || !strings.Contains(string(out), id.String()) {
		t.Fatalf("snapshot lacks identity or serial: %s", out)
	}
	_, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"PRIVATE", "private", strings.Split(string(keyPEM), "\n")[1][:20]} {
		if strings.Contains(string(out), bad) {
			t.Fatalf("snapshot contains %q: %s", bad, out)
		}
	}
}

func TestManagerClosed(t *testing.T) {
	f := newFixture(t, nil)
	f.m.Close()
	if _, err := f.m.GetX509SVIDFor(ctxT(t), wl("a", "b")); !errors.Is(err, identity.ErrClosed) {
		t.Fatalf("err = %v", err)
	}
}

func TestManagerIntermediateChain(t *testing.T) {
	ca := identitytest.MustCA("cluster.local")
	inter, err := ca.NewIntermediate()
	if err != nil {
		t.Fatal(err)
	}
	m, err := identity.NewManager(identity.ManagerConfig{
		Provider: identity.CSRProvider{Signer: &identitytest.FakeSigner{Intermediate: inter}},
		Bundle:   x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.Cert}),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.GetX509SVIDFor(ctxT(t), wl("shop", "web"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Certificates) != 2 || !s.Certificates[1].Equal(inter.Cert) {
		t.Fatalf("chain length %d, want leaf + intermediate", len(s.Certificates))
	}
}

func TestManagerBoundsConcurrentCSRs(t *testing.T) {
	f := newFixture(t, func(c *identity.ManagerConfig) { c.MaxConcurrentFetches = 1 })
	gate := make(chan struct{})
	f.signer.SetGate(gate)
	ctx := ctxT(t)
	errs := make(chan error, 3)
	for i := range 3 {
		go func() { errs <- f.m.Prefetch(ctx, wl("shop", fmt.Sprintf("sa%d", i))) }()
	}
	waitUntil(t, func() bool { st := f.m.Stats(); return st.QueuedHigh == 2 && f.signer.Calls() == 1 })
	f.signer.SetGate(nil)
	close(gate)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := f.signer.Calls(); n != 3 {
		t.Fatalf("signer calls %d, want 3", n)
	}
}

// TestManagerReleaseGrace: after the last Release an identity stays usable
// for ReleaseGrace (a replacement pod starts on it even with the CA down);
// an Acquire meanwhile keeps it; it is forgotten once the grace passes
// without one.
func TestManagerReleaseGrace(t *testing.T) {
	f := newFixture(t, func(c *identity.ManagerConfig) { c.ReleaseGrace = time.Minute })
	ctx := ctxT(t)
	id := wl("shop", "web")
	if err := f.m.Acquire(ctx, id); err != nil {
		t.Fatal(err)
	}
	f.m.Release(id)
	f.signer.SetError(errors.New("CA down"))
	if snap := f.m.Snapshot(); len(snap) != 1 || snap[0].Refs != 0 || !snap[0].Usable || !snap[0].Released {
		t.Fatalf("right after the last release: %+v", snap)
	}
	// A replacement pod within the grace: served from the cache, CA down.
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := f.m.Acquire(short, id); err != nil {
		t.Fatalf("acquire within the grace with the CA down: %v", err)
	}
	f.clock.Advance(2 * time.Minute) // a linger of the first release must not apply any more
	time.Sleep(20 * time.Millisecond)
	if snap := f.m.Snapshot(); len(snap) != 1 || snap[0].Refs != 1 || snap[0].Released {
		t.Fatalf("re-acquired identity forgotten by an old grace (or still marked released): %+v", snap)
	}
	f.m.Release(id)
	f.clock.Advance(30 * time.Second)
	time.Sleep(20 * time.Millisecond)
	if len(f.m.Snapshot()) != 1 {
		t.Fatal("forgotten before the grace passed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(f.m.Snapshot()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not forgotten after the grace: %+v", f.m.Snapshot())
		}
		f.clock.Advance(40 * time.Second)
		time.Sleep(5 * time.Millisecond)
	}
}

// TestManagerRenewsAfterIssuanceNotBackdate: a CA back-dates NotBefore (5
// minutes here) for clock skew; with a TTL shorter than that the middle of
// the whole validity window lies before the issuance. Renewal is planned
// from the moment the certificate was obtained, so a 3-minute certificate
// is renewed after 81 s (0.45 of it), not every InitialBackoff for ever (the
// daemons in the e2e cluster, with 3-minute certificates, asked the CA
// twice a second).
func TestManagerRenewsAfterIssuanceNotBackdate(t *testing.T) {
	f := newFixture(t, nil)
	f.signer.TTL = 3 * time.Minute
	ctx := ctxT(t)
	id := wl("shop", "web")
	if err := f.m.Prefetch(ctx, id); err != nil {
		t.Fatal(err)
	}
	s, _ := f.m.GetX509SVIDFor(ctx, id)
	leaf := s.Certificates[0]
	if !leaf.NotBefore.Before(f.clock.Now().Add(-4 * time.Minute)) {
		t.Fatalf("the signer no longer back-dates (NotBefore %s): the test needs it", leaf.NotBefore)
	}
	if err := f.clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// 0.45 of the 3 minutes left (NotAfter has whole seconds).
	want := time.Duration(0.45 * float64(leaf.NotAfter.Sub(f.clock.Now())))
	if got := f.clock.Pending()[0]; got != want || got < time.Minute {
		t.Fatalf("renewal timer in %s, want %s", got, want)
	}
}

package ca

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/identity/identitytest"
)

// countingAuth is a hand-written Authenticator: tokens in good are node
// callers, others are refused; calls are counted, and block on gate (when
// set) until the test lets them go.
type countingAuth struct {
	good     map[string]Caller
	gate     chan struct{}
	calls    atomic.Int64
	inFlight atomic.Int64
	peak     atomic.Int64
	fail     error // returned for every token when set
}

func (a *countingAuth) Authenticate(ctx context.Context, token string) (Caller, error) {
	a.calls.Add(1)
	n := a.inFlight.Add(1)
	defer a.inFlight.Add(-1)
	for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
	}
	if a.gate != nil {
		select {
		case <-a.gate:
		case <-ctx.Done():
			return Caller{}, ctx.Err()
		}
	}
	if a.fail != nil {
		return Caller{}, a.fail
	}
	if c, ok := a.good[token]; ok {
		return c, nil
	}
	return Caller{}, fmt.Errorf("%w: unknown", ErrUnauthenticated)
}

var nodeCaller = Caller{Namespace: "ambit-system", ServiceAccount: "ambit", Node: "node-a"}

func isNode(c Caller) bool { return c == nodeCaller }

var src = netip.MustParseAddr("10.0.0.1")

func TestReviewCacheBoundedByTTLAndExpiry(t *testing.T) {
	clock := identitytest.NewFakeClock(time.Unix(1_800_000_000, 0))
	auth := &countingAuth{good: map[string]Caller{"good": nodeCaller, "good-soon": nodeCaller}}
	g := newReviewGate(auth, Admission{CacheTTL: 10 * time.Second}.withDefaults(), clock, isNode)
	ctx := context.Background()
	far := clock.Now().Add(time.Hour)
	check := func(token string, exp time.Time, wantCalls int64, wantErr bool) {
		t.Helper()
		c, err := g.authenticate(ctx, src, token, exp)
		if (err != nil) != wantErr || (!wantErr && c != nodeCaller) {
			t.Fatalf("%s: %+v, %v", token, c, err)
		}
		if wantErr && !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("%s: %v, want ErrUnauthenticated", token, err)
		}
		if n := auth.calls.Load(); n != wantCalls {
			t.Fatalf("%s: %d reviews, want %d", token, n, wantCalls)
		}
	}
	check("good", far, 1, false)
	check("good", far, 1, false) // positive result cached
	check("bad", far, 2, true)
	check("bad", far, 2, true) // negative result cached
	clock.Advance(10 * time.Second)
	check("good", far, 3, false) // TTL over: reviewed again
	check("bad", far, 4, true)

	// A token expiring in 3s is cached 3s, not 10.
	soon := clock.Now().Add(3 * time.Second)
	check("good-soon", soon, 5, false)
	clock.Advance(2 * time.Second)
	check("good-soon", soon, 5, false)
	clock.Advance(time.Second)
	check("good-soon", soon, 6, false)
	// Failures of the Authenticator itself (API down) are not cached.
	auth.fail = errors.New("apiserver down")
	for range 3 {
		if _, err := g.authenticate(ctx, src, "t-api", far); err == nil || errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("API failure: %v", err)
		}
	}
	if n := auth.calls.Load(); n != 9 {
		t.Fatalf("%d reviews after 3 API failures, want 9", n)
	}
}

func TestReviewCacheSizeCapped(t *testing.T) {
	clock := identitytest.NewFakeClock(time.Unix(1_800_000_000, 0))
	auth := &countingAuth{}
	g := newReviewGate(auth, Admission{CacheSize: 16, BurstPerSource: 1000}.withDefaults(), clock, isNode)
	for i := range 200 {
		g.authenticate(context.Background(), src, fmt.Sprint("bad-", i), clock.Now().Add(time.Hour))
	}
	if st := g.stats(); st.Cached > 16 || st.Reviews != 200 {
		t.Fatalf("stats %+v, want at most 16 cached of 200 reviews", st)
	}
}

// TestReviewGateBounds: one token asked for by many at once is reviewed
// once; distinct tokens never run more than MaxReviewsInFlight reviews, the
// excess is refused "overloaded" after ReviewWait; a source past its bucket
// is refused without a review; a known node token re-reviews in a reserved
// slot while the shared ones are full.
func TestReviewGateBounds(t *testing.T) {
	clock := identitytest.NewFakeClock(time.Unix(1_800_000_000, 0))
	auth := &countingAuth{good: map[string]Caller{"node": nodeCaller}, gate: make(chan struct{})}
	g := newReviewGate(auth, Admission{MaxReviewsInFlight: 4, ReservedReviews: 1, RatePerSource: 1, BurstPerSource: 1000,
		CacheTTL: time.Second}.withDefaults(), clock, isNode)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exp := clock.Now().Add(time.Hour)

	// The node's token, reviewed once (known from now on).
	go func() { auth.gate <- struct{}{} }()
	if c, err := g.authenticate(ctx, src, "node", exp); err != nil || c != nodeCaller {
		t.Fatalf("node: %+v %v", c, err)
	}
	clock.Advance(2 * time.Second) // its cached result is stale now

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	ask := func(token string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := g.authenticate(ctx, src, token, exp)
			errs <- err
		}()
	}
	for range 50 {
		ask("same-bad")
	}
	for i := range 3 {
		ask(fmt.Sprint("bad-", i))
	}
	waitFor(t, func() bool { return auth.inFlight.Load() == 4 })
	// Shared slots full: a new token waits ReviewWait and is refused.
	for i := range 5 {
		ask(fmt.Sprint("late-", i))
	}
	if err := clock.WaitTimers(ctx, 5); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	for range 5 {
		if err := <-errs; ReasonOf(err) != ReasonOverloaded {
			t.Fatalf("over the cap: %v, want overloaded", err)
		}
	}
	// The known node token gets the reserved slot.
	nodeDone := make(chan error, 1)
	go func() { _, err := g.authenticate(ctx, src, "node", exp); nodeDone <- err }()
	waitFor(t, func() bool { return auth.inFlight.Load() == 5 })
	if p := auth.peak.Load(); p != 5 {
		t.Fatalf("peak %d reviews in flight, want 4 shared + 1 reserved", p)
	}
	// Every other asker of "same-bad" has joined its review in flight
	// before the reviews are released (a goroutine scheduled after the
	// release would find the cached result instead: the same saving, but
	// not what this step checks).
	waitFor(t, func() bool { return g.stats().Joined == 49 })
	close(auth.gate)
	if err := <-nodeDone; err != nil {
		t.Fatalf("node during the flood: %v", err)
	}
	wg.Wait()
	for range 53 {
		if err := <-errs; !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("bad token: %v", err)
		}
	}
	st := g.stats()
	if st.Reviews != 1+4+1 || st.Joined != 49 || st.Reserved != 1 || st.PeakInFlight != 5 {
		t.Fatalf("stats %+v: want 6 reviews (node twice, same-bad once, 3 bad), 49 joined, 1 reserved", st)
	}

	// Source buckets: RatePerSource 1, fresh burst of 2 for another source.
	g2 := newReviewGate(&countingAuth{}, Admission{RatePerSource: 1, BurstPerSource: 2}.withDefaults(), clock, isNode)
	other := netip.MustParseAddr("2001:db8::1")
	for i, want := range []Reason{ReasonUnauthenticated, ReasonUnauthenticated, ReasonSourceRateLimited} {
		_, err := g2.authenticate(ctx, other, fmt.Sprint("s", i), exp)
		if got := ReasonOf(err); want == ReasonUnauthenticated && !errors.Is(err, ErrUnauthenticated) || want != ReasonUnauthenticated && got != want {
			t.Fatalf("request %d from %s: %v, want %s", i, other, err, want)
		}
	}
	// The same /64 shares the bucket; a cached result does not spend it.
	if _, err := g2.authenticate(ctx, netip.MustParseAddr("2001:db8::2"), "s9", exp); ReasonOf(err) != ReasonSourceRateLimited {
		t.Fatalf("same /64: %v", err)
	}
	if _, err := g2.authenticate(ctx, other, "s0", exp); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("cached result: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

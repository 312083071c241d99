package ca

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/ambit-mesh/ambit/identity"
)

// Admission bounds the work the CA does for a caller it has not
// authenticated yet: every TokenReview costs the API server a signature
// check, so a flood of bad tokens must not become a flood of reviews. Zero
// fields take the defaults below; docs/identity.md has the reasoning and the
// measurements.
type Admission struct {
	// MaxReviewsInFlight caps concurrent Authenticator calls. Default 8.
	MaxReviewsInFlight int
	// ReservedReviews are extra slots only for re-reviewing a token that
	// authenticated as a node before (its cached result went stale), so a
	// flood of new tokens cannot lock a known node out. Default 2.
	ReservedReviews int
	// ReviewWait is how long a request waits for a free review slot before
	// it is answered 503 "overloaded" with Retry-After. Default 250ms.
	ReviewWait time.Duration
	// ReviewTimeout bounds one Authenticator call. Default 5s.
	ReviewTimeout time.Duration
	// CacheTTL is how long a review's result (positive or negative) is
	// reused for the same token; never past the token's own exp.
	// Default 10s.
	CacheTTL time.Duration
	// CacheSize caps the cached results. Default 4096.
	CacheSize int
	// RatePerSource and BurstPerSource shape a token bucket per source
	// address (IPv6 per /64) spent only by requests that start a review
	// (not by cache hits or by requests joining a review in flight).
	// Defaults 5/s and 20.
	RatePerSource  float64
	BurstPerSource int
	// MaxTokenBytes bounds a bearer token. Default DefaultMaxTokenBytes.
	MaxTokenBytes int
}

func (a Admission) withDefaults() Admission {
	if a.MaxReviewsInFlight <= 0 {
		a.MaxReviewsInFlight = 8
	}
	if a.ReservedReviews <= 0 {
		a.ReservedReviews = 2
	}
	if a.ReviewWait <= 0 {
		a.ReviewWait = 250 * time.Millisecond
	}
	if a.ReviewTimeout <= 0 {
		a.ReviewTimeout = 5 * time.Second
	}
	if a.CacheTTL <= 0 {
		a.CacheTTL = 10 * time.Second
	}
	if a.CacheSize <= 0 {
		a.CacheSize = 4096
	}
	if a.RatePerSource <= 0 {
		a.RatePerSource = 5
	}
	if a.BurstPerSource <= 0 {
		a.BurstPerSource = 20
	}
	if a.MaxTokenBytes <= 0 {
		a.MaxTokenBytes = DefaultMaxTokenBytes
	}
	return a
}

// AdmissionStats count the reviews and what spared them.
type AdmissionStats struct {
	Reviews      uint64 // Authenticator calls made
	CacheHits    uint64 // requests answered from a cached review
	Joined       uint64 // requests that waited for the same token's review in flight
	Reserved     uint64 // reviews of known node tokens in a reserved slot
	InFlight     int    // Authenticator calls running now
	PeakInFlight int    // most Authenticator calls ever running at once
	Cached       int    // cached results now
}

// reviewGate runs the Authenticator for the Server under Admission: a
// cache of results by token hash, one review per token at a time, a token
// bucket per source and a cap on reviews in flight.
type reviewGate struct {
	auth    Authenticator
	cfg     Admission
	clock   identity.Clock
	trust   func(Caller) bool // a caller whose token earns a reserved slot later
	sem     chan struct{}
	prio    chan struct{}
	sources *nodeLimiter

	mu    sync.Mutex
	cache map[[32]byte]review
	known map[[32]byte]time.Time // tokens trust accepted, until their exp
	calls map[[32]byte]*reviewCall
	st    AdmissionStats
}

type review struct {
	caller  Caller
	err     error
	expires time.Time
}

type reviewCall struct {
	done chan struct{}
	res  review
}

func newReviewGate(auth Authenticator, cfg Admission, clock identity.Clock, trust func(Caller) bool) *reviewGate {
	return &reviewGate{auth: auth, cfg: cfg, clock: clock, trust: trust,
		sem:     make(chan struct{}, cfg.MaxReviewsInFlight),
		prio:    make(chan struct{}, cfg.ReservedReviews),
		sources: newNodeLimiter(cfg.RatePerSource, cfg.BurstPerSource, clock),
		cache:   map[[32]byte]review{}, known: map[[32]byte]time.Time{}, calls: map[[32]byte]*reviewCall{}}
}

func (g *reviewGate) stats() AdmissionStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.st
	st.Cached = len(g.cache)
	return st
}

// authenticate returns the Authenticator's answer for token, from the
// cache, from the same token's review in flight, or from a new review if
// source may start one and a slot frees within ReviewWait. exp is the
// token's expiry (from precheckToken). Denials of the gate itself are
// *DenyError with ReasonSourceRateLimited or ReasonOverloaded.
func (g *reviewGate) authenticate(ctx context.Context, source netip.Addr, token string, exp time.Time) (Caller, error) {
	key := sha256.Sum256([]byte(token))
	r, c, known, ok := g.lookup(key)
	if ok {
		return r.caller, r.err
	} else if c != nil {
		return g.wait(ctx, c)
	}
	if !known && !g.sources.allow(sourceKey(source)) {
		return Caller{}, deny(ReasonSourceRateLimited, "source %s is over its rate of token reviews", sourceKey(source))
	}
	g.mu.Lock()
	if c = g.calls[key]; c != nil { // started while this one was checked
		g.st.Joined++
		g.mu.Unlock()
		return g.wait(ctx, c)
	}
	c = &reviewCall{done: make(chan struct{})}
	g.calls[key] = c
	g.mu.Unlock()

	c.res = g.run(ctx, token, exp, known)
	g.mu.Lock()
	delete(g.calls, key)
	if c.res.err == nil || errors.Is(c.res.err, ErrUnauthenticated) {
		g.storeLocked(key, c.res)
	}
	switch {
	case c.res.err == nil && g.trust(c.res.caller):
		g.rememberLocked(key, exp)
	case c.res.err != nil && errors.Is(c.res.err, ErrUnauthenticated):
		delete(g.known, key)
	}
	g.mu.Unlock()
	close(c.done)
	return c.res.caller, c.res.err
}

// lookup returns a live cached result (ok), or the review in flight for
// key, and whether key is a token that authenticated as a node before.
func (g *reviewGate) lookup(key [32]byte) (r review, c *reviewCall, known, ok bool) {
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if r, ok := g.cache[key]; ok {
		if now.Before(r.expires) {
			g.st.CacheHits++
			return r, nil, false, true
		}
		delete(g.cache, key)
	}
	if c := g.calls[key]; c != nil {
		g.st.Joined++
		return review{}, c, false, false
	}
	if until, ok := g.known[key]; ok {
		if now.Before(until) {
			return review{}, nil, true, false
		}
		delete(g.known, key)
	}
	return review{}, nil, false, false
}

func (g *reviewGate) wait(ctx context.Context, c *reviewCall) (Caller, error) {
	select {
	case <-c.done:
		return c.res.caller, c.res.err
	case <-ctx.Done():
		return Caller{}, ctx.Err()
	}
}

// run takes a review slot (waiting at most ReviewWait) and calls the
// Authenticator. The review is not cancelled with the request that started
// it (others may be waiting for it) but is bounded by ReviewTimeout, and
// holds its slot until it returns.
func (g *reviewGate) run(ctx context.Context, token string, exp time.Time, known bool) review {
	prio := g.prio
	if !known {
		prio = nil // a nil channel is never ready
	}
	var slot chan struct{}
	select {
	case g.sem <- struct{}{}:
		slot = g.sem
	case prio <- struct{}{}:
		slot = prio
	default:
		t := g.clock.NewTimer(g.cfg.ReviewWait)
		select {
		case g.sem <- struct{}{}:
			slot = g.sem
		case prio <- struct{}{}:
			slot = prio
		case <-t.C():
			return review{err: deny(ReasonOverloaded, "%d token reviews in flight for %s", g.cfg.MaxReviewsInFlight, g.cfg.ReviewWait)}
		case <-ctx.Done():
			t.Stop()
			return review{err: ctx.Err()}
		}
		t.Stop()
	}
	g.mu.Lock()
	if slot == g.prio {
		g.st.Reserved++
	}
	g.st.Reviews++
	g.st.InFlight++
	g.st.PeakInFlight = max(g.st.PeakInFlight, g.st.InFlight)
	g.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.ReviewTimeout)
	caller, err := g.auth.Authenticate(rctx, token)
	cancel()
	<-slot
	now := g.clock.Now()
	g.mu.Lock()
	g.st.InFlight--
	g.mu.Unlock()
	return review{caller: caller, err: err, expires: minTime(now.Add(g.cfg.CacheTTL), exp)}
}

// storeLocked caches r, making room by dropping expired results, then an
// arbitrary one.
func (g *reviewGate) storeLocked(key [32]byte, r review) {
	if !g.clock.Now().Before(r.expires) {
		return
	}
	if len(g.cache) >= g.cfg.CacheSize {
		now := g.clock.Now()
		for k, v := range g.cache {
			if !now.Before(v.expires) {
				delete(g.cache, k)
			}
		}
		for k := range g.cache {
			if len(g.cache) < g.cfg.CacheSize {
				break
			}
			delete(g.cache, k)
		}
	}
	g.cache[key] = r
}

// rememberLocked marks key as a node's token until exp, within the cache's
// size (only real node tokens get here: the map cannot be flooded).
func (g *reviewGate) rememberLocked(key [32]byte, exp time.Time) {
	if len(g.known) >= g.cfg.CacheSize {
		now := g.clock.Now()
		for k, until := range g.known {
			if !now.Before(until) || len(g.known) >= g.cfg.CacheSize {
				delete(g.known, k)
			}
		}
	}
	g.known[key] = exp
}

// sourceKey is the rate-limited unit of a source: the address, or its /64
// for IPv6 (one host usually holds a whole /64).
func sourceKey(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

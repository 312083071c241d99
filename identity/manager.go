package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrClosed is returned by a Manager after Close.
var ErrClosed = errors.New("identity: manager closed")

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	// Provider obtains certificates (the built-in CA through CSRProvider,
	// files, or the Workload API). Required.
	Provider Provider
	// Bundle verifies every chain the Provider returns. Required.
	Bundle x509bundle.Source
	// MaxConcurrentFetches bounds CSRs in flight. Optional, default 8.
	MaxConcurrentFetches int
	// FetchTimeout bounds one attempt. Optional, default 30s.
	FetchTimeout time.Duration
	// InitialBackoff and MaxBackoff shape the per-identity retry delay after
	// a failed attempt: InitialBackoff doubling up to MaxBackoff, each delay
	// shortened by a random 0-20%. Optional, defaults 500ms and 150s.
	InitialBackoff, MaxBackoff time.Duration
	// RenewJitter spreads renewals: a certificate is renewed at
	// (0.5 ± RenewJitter) of its lifetime. Optional, default 0.05.
	RenewJitter float64
	// ReleaseGrace is how long an identity stays cached (and renewed) after
	// Release dropped its last reference, before it is forgotten: a pod
	// replaced by another of the same service account on the same node
	// (a rollout, a Job's next run) starts on the certificate held, even
	// while the CA is unreachable. Optional, default DefaultReleaseGrace;
	// negative: forget at once.
	ReleaseGrace time.Duration
	// Clock is the time source. Optional, default RealClock.
	Clock Clock
	// Logger receives one line per issuance and per failure; never keys.
	// Optional, default slog.Default().
	Logger *slog.Logger
	// Observer receives events for metrics. Optional.
	Observer Observer
	// Rand returns numbers in [0,1) for jitter. Optional (tests fix it).
	Rand func() float64
}

// Manager obtains and renews the certificates of the workload identities
// that have pods on this node, and serves them to the tunnel through
// SVIDSource. See the package documentation for the life of an identity.
type Manager struct {
	cfg     ManagerConfig
	log     *slog.Logger
	limiter *csrLimiter
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.RWMutex
	entries map[spiffeid.ID]*entry
	closed  bool

	hits, misses, fetches, failures atomic.Uint64
}

var _ SVIDSource = (*Manager)(nil)

// NewManager returns a Manager; it starts no work until an identity is asked
// for. Close stops it.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Provider == nil {
		return nil, errors.New("identity: manager: Provider required")
	}
	if cfg.Bundle == nil {
		return nil, errors.New("identity: manager: Bundle required")
	}
	if cfg.MaxConcurrentFetches <= 0 {
		cfg.MaxConcurrentFetches = 8
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 30 * time.Second
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 150 * time.Second
	}
	if cfg.RenewJitter <= 0 || cfg.RenewJitter >= 0.5 {
		cfg.RenewJitter = 0.05
	}
	if cfg.ReleaseGrace == 0 {
		cfg.ReleaseGrace = DefaultReleaseGrace
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "identity"),
		limiter: newCSRLimiter(cfg.MaxConcurrentFetches),
		ctx:     ctx,
		cancel:  cancel,
		entries: map[spiffeid.ID]*entry{},
	}, nil
}

// GetX509SVIDFor implements SVIDSource. A cached usable certificate is
// returned at once. An identity not yet tracked is fetched on demand and
// the call waits for it (bounded by ctx). An identity whose last attempt
// failed and that has no usable certificate fails at once with
// ErrNoCertificate and the reason, rather than holding a handshake until
// the next retry.
func (m *Manager) GetX509SVIDFor(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	m.mu.RLock()
	e := m.entries[id]
	m.mu.RUnlock()
	if e != nil {
		if s := e.svid.Load(); s != nil && usable(s, m.cfg.Clock.Now()) {
			m.hits.Add(1)
			return s, nil
		}
	}
	m.misses.Add(1)
	e, err := m.track(id, 0)
	if err != nil {
		return nil, err
	}
	return m.wait(ctx, e, true)
}

// Prefetch starts tracking id (if it is not tracked yet) and blocks until it
// has a usable certificate or ctx is done. The capture calls it before a
// pod's network is released, so the pod's first connection finds its
// certificate cached. An identity tracked only through Prefetch or
// GetX509SVIDFor stays until Forget.
func (m *Manager) Prefetch(ctx context.Context, id spiffeid.ID) error {
	e, err := m.track(id, 0)
	if err != nil {
		return err
	}
	_, err = m.wait(ctx, e, false)
	return err
}

// Acquire is Prefetch with a reference: each enrolled pod of id holds one,
// and Release of the last one forgets id. When Acquire fails it holds no
// reference.
func (m *Manager) Acquire(ctx context.Context, id spiffeid.ID) error {
	e, err := m.track(id, 1)
	if err != nil {
		return err
	}
	if _, err := m.wait(ctx, e, false); err != nil {
		m.Release(id)
		return err
	}
	return nil
}

// Release drops a reference taken by Acquire; at zero the identity is
// forgotten (its key and certificate are dropped) after
// ManagerConfig.ReleaseGrace, unless it is acquired again meanwhile.
func (m *Manager) Release(id spiffeid.ID) {
	m.mu.Lock()
	e := m.entries[id]
	if e == nil || e.refs == 0 {
		m.mu.Unlock()
		return
	}
	e.refs--
	last := e.refs == 0
	if last && m.cfg.ReleaseGrace > 0 {
		e.lingerGen++
		gen := e.lingerGen
		m.wg.Add(1)
		go m.linger(e, gen)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	if last {
		m.Forget(id)
	}
}

// DefaultReleaseGrace is ManagerConfig.ReleaseGrace's default.
const DefaultReleaseGrace = 5 * time.Minute

// linger forgets e after ReleaseGrace unless it was acquired again (its
// lingerGen moved) or the manager closed.
func (m *Manager) linger(e *entry, gen uint64) {
	defer m.wg.Done()
	t := m.cfg.Clock.NewTimer(m.cfg.ReleaseGrace)
	defer t.Stop()
	select {
	case <-m.ctx.Done():
		return
	case <-t.C():
	}
	m.mu.Lock()
	still := m.entries[e.id] == e && e.refs == 0 && e.lingerGen == gen
	m.mu.Unlock()
	if still {
		m.Forget(e.id)
	}
}

// Forget stops tracking id whatever its references: its renewal stops and
// its key and certificate are dropped. Callers waiting for it fail.
func (m *Manager) Forget(id spiffeid.ID) {
	m.mu.Lock()
	e := m.entries[id]
	delete(m.entries, id)
	m.mu.Unlock()
	if e == nil {
		return
	}
	e.cancel()
	e.mu.Lock()
	had := e.svid.Swap(nil) != nil
	e.state = StateForgotten
	e.broadcast()
	e.mu.Unlock()
	if had {
		m.cfg.Observer.CertificateChanged(id, time.Time{})
	}
	m.log.Info("identity forgotten", "id", id.String())
}

// Close stops every renewal and waits for the manager's goroutines.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	ids := make([]spiffeid.ID, 0, len(m.entries))
	for id := range m.entries {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.Forget(id)
	}
	m.cancel()
	m.wg.Wait()
	return nil
}

// Stats returns the manager's counters.
func (m *Manager) Stats() Stats {
	m.mu.RLock()
	n := len(m.entries)
	m.mu.RUnlock()
	hi, lo := m.limiter.queued()
	return Stats{
		Identities:    n,
		CacheHits:     m.hits.Load(),
		CacheMisses:   m.misses.Load(),
		Fetches:       m.fetches.Load(),
		FetchFailures: m.failures.Load(),
		QueuedHigh:    hi,
		QueuedLow:     lo,
	}
}

// track returns id's entry, creating it and starting its renewal loop if
// needed, and adds refs references.
func (m *Manager) track(id spiffeid.ID, refs int) (*entry, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("%w: empty identity", ErrNoCertificate)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	e := m.entries[id]
	if e == nil {
		ctx, cancel := context.WithCancel(m.ctx)
		e = &entry{id: id, cancel: cancel, changed: make(chan struct{}), state: StatePending}
		m.entries[id] = e
		m.wg.Add(1)
		go m.run(ctx, e)
	}
	e.refs += refs
	if refs > 0 {
		e.lingerGen++ // a pending linger no longer applies
	}
	return e, nil
}

// wait blocks until e has a usable certificate. With failFast it gives up
// as soon as an attempt has failed and nothing usable is cached.
func (m *Manager) wait(ctx context.Context, e *entry, failFast bool) (*x509svid.SVID, error) {
	for {
		e.mu.Lock()
		s := e.svid.Load()
		if s != nil && usable(s, m.cfg.Clock.Now()) {
			e.mu.Unlock()
			return s, nil
		}
		if e.state == StateForgotten {
			e.mu.Unlock()
			return nil, fmt.Errorf("%w for %s: identity forgotten", ErrNoCertificate, e.id)
		}
		if failFast && e.failures > 0 {
			err := e.noCertLocked()
			e.mu.Unlock()
			return nil, err
		}
		ch := e.changed
		e.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			e.mu.Lock()
			err := e.noCertLocked()
			e.mu.Unlock()
			return nil, fmt.Errorf("%w (%w)", err, ctx.Err())
		}
	}
}

func usable(s *x509svid.SVID, now time.Time) bool {
	leaf := s.Certificates[0]
	return !now.Before(leaf.NotBefore) && now.Before(leaf.NotAfter)
}

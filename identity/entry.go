package identity

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// State is where an identity is in its life, as shown by Snapshot.
type State string

// States of an identity.
const (
	StatePending   State = "pending"   // first certificate being fetched
	StateValid     State = "valid"     // certificate served, renewal scheduled
	StateRenewing  State = "renewing"  // certificate served, renewal in flight
	StateBackoff   State = "backoff"   // last attempt failed, retry scheduled
	StateForgotten State = "forgotten" // no longer tracked
)

// entry is one tracked identity. svid is read lock-free on the handshake
// path; everything else is guarded by mu.
type entry struct {
	id     spiffeid.ID
	cancel context.CancelFunc
	refs   int // guarded by Manager.mu
	// lingerGen, guarded by Manager.mu, moves on every Acquire and last
	// Release: a pending forget applies only to the generation it saw.
	lingerGen uint64

	svid atomic.Pointer[x509svid.SVID]

	mu          sync.Mutex
	state       State
	failures    int // consecutive failed attempts
	lastErr     error
	nextAttempt time.Time
	renewAt     time.Time
	changed     chan struct{} // closed and replaced on every change
}

func (e *entry) broadcast() {
	close(e.changed)
	e.changed = make(chan struct{})
}

func (e *entry) noCertLocked() error {
	if e.lastErr != nil {
		return fmt.Errorf("%w for %s: %d failed attempts, next at %s: %w",
			ErrNoCertificate, e.id, e.failures, e.nextAttempt.UTC().Format(time.RFC3339), e.lastErr)
	}
	if s := e.svid.Load(); s != nil {
		return fmt.Errorf("%w for %s: certificate expired at %s", ErrNoCertificate, e.id,
			s.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("%w for %s: first certificate still being fetched", ErrNoCertificate, e.id)
}

// run is the life of one identity: fetch, then sleep until the renewal
// time or, after a failure, for the back-off delay; repeat until forgotten.
func (m *Manager) run(ctx context.Context, e *entry) {
	defer m.wg.Done()
	for {
		var wait time.Duration
		cur := e.svid.Load()
		realTime := cur == nil || !usable(cur, m.cfg.Clock.Now())
		if err := m.limiter.acquire(ctx, realTime); err != nil {
			return
		}
		e.mu.Lock()
		if cur != nil && e.state != StateForgotten {
			e.state = StateRenewing
		}
		e.mu.Unlock()
		svid, d, err := m.fetchOnce(ctx, e.id)
		m.limiter.release()
		if ctx.Err() != nil {
			return
		}
		m.fetches.Add(1)
		m.cfg.Observer.FetchCompleted(e.id, d, err)
		now := m.cfg.Clock.Now()
		e.mu.Lock()
		if ctx.Err() != nil { // forgotten while fetching: drop the result
			e.mu.Unlock()
			return
		}
		if err != nil {
			m.failures.Add(1)
			e.failures++
			e.lastErr = err
			wait = m.backoff(e.failures)
			e.nextAttempt = now.Add(wait)
			e.state = StateBackoff
			e.broadcast()
			failures := e.failures
			e.mu.Unlock()
			attrs := []any{"id", e.id.String(), "attempt", failures, "retry_in", wait, "err", err}
			if cur != nil && usable(cur, now) {
				attrs = append(attrs, "serving_until", cur.Certificates[0].NotAfter)
			}
			m.log.Warn("certificate fetch failed", attrs...)
		} else if cur != nil && cur.Certificates[0].Equal(svid.Certificates[0]) {
			// A push-based provider (files, Workload API) has nothing newer
			// yet: look again after a tenth of the remaining lifetime.
			leaf := cur.Certificates[0]
			e.failures, e.lastErr = 0, nil
			wait = max(leaf.NotAfter.Sub(now)/10, m.cfg.InitialBackoff)
			e.nextAttempt = now.Add(wait)
			e.state = StateValid
			e.broadcast()
			e.mu.Unlock()
		} else {
			leaf := svid.Certificates[0]
			e.svid.Store(svid)
			e.failures, e.lastErr = 0, nil
			e.renewAt = m.renewTime(now, leaf.NotBefore, leaf.NotAfter)
			e.nextAttempt = e.renewAt
			e.state = StateValid
			e.broadcast()
			e.mu.Unlock()
			wait = max(e.renewAt.Sub(now), m.cfg.InitialBackoff)
			m.cfg.Observer.CertificateChanged(e.id, leaf.NotAfter)
			m.log.Info("certificate issued", "id", e.id.String(), "serial", leaf.SerialNumber.Text(16),
				"not_after", leaf.NotAfter, "renew_at", e.renewAt, "took", d)
		}
		t := m.cfg.Clock.NewTimer(wait)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

func (m *Manager) fetchOnce(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, time.Duration, error) {
	start := time.Now()
	fctx, cancel := context.WithTimeout(ctx, m.cfg.FetchTimeout)
	defer cancel()
	svid, err := m.cfg.Provider.FetchSVID(fctx, id)
	if err == nil {
		err = CheckSVID(svid, id, m.cfg.Bundle, m.cfg.Clock.Now())
	}
	return svid, time.Since(start), err
}

// backoff is the delay after the n-th consecutive failure: InitialBackoff
// doubling up to MaxBackoff, shortened by a random 0-20% so that nodes that
// lost the CA together do not come back in lock-step.
func (m *Manager) backoff(n int) time.Duration {
	d := m.cfg.InitialBackoff
	for i := 1; i < n && d < m.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, m.cfg.MaxBackoff)
	return d - time.Duration(0.2*m.cfg.Rand()*float64(d))
}

// renewTime is (0.5 ± RenewJitter) of the way through the part of the
// validity window that starts when the certificate was obtained: CAs
// back-date NotBefore for clock skew (ambit's by 5 minutes), and with a
// short TTL the middle of the whole window can lie before the issuance,
// which renewed the certificate every InitialBackoff for ever.
func (m *Manager) renewTime(obtained, notBefore, notAfter time.Time) time.Time {
	start := notBefore
	if obtained.After(start) {
		start = obtained
	}
	frac := 0.5 + m.cfg.RenewJitter*(2*m.cfg.Rand()-1)
	return start.Add(time.Duration(frac * float64(notAfter.Sub(start))))
}

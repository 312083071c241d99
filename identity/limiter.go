package identity

import (
	"context"
	"sync"
)

// csrLimiter bounds concurrent CSRs. Waiters are served FIFO within two
// classes, and every real-time waiter (an identity with no usable
// certificate: a pod is waiting) goes ahead of every background renewal.
type csrLimiter struct {
	mu        sync.Mutex
	free      int
	high, low []*limitWaiter
}

type limitWaiter struct {
	ch      chan struct{}
	granted bool
}

func newCSRLimiter(n int) *csrLimiter { return &csrLimiter{free: n} }

func (l *csrLimiter) acquire(ctx context.Context, high bool) error {
	l.mu.Lock()
	if l.free > 0 && len(l.high) == 0 && (high || len(l.low) == 0) {
		l.free--
		l.mu.Unlock()
		return nil
	}
	w := &limitWaiter{ch: make(chan struct{})}
	if high {
		l.high = append(l.high, w)
	} else {
		l.low = append(l.low, w)
	}
	l.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		if w.granted {
			l.mu.Unlock()
			l.release()
			return ctx.Err()
		}
		l.high = removeWaiter(l.high, w)
		l.low = removeWaiter(l.low, w)
		l.mu.Unlock()
		return ctx.Err()
	}
}

func (l *csrLimiter) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	var w *limitWaiter
	switch {
	case len(l.high) > 0:
		w, l.high = l.high[0], l.high[1:]
	case len(l.low) > 0:
		w, l.low = l.low[0], l.low[1:]
	default:
		l.free++
		return
	}
	w.granted = true
	close(w.ch)
}

// queued reports the waiters of each class (for tests and Stats).
func (l *csrLimiter) queued() (high, low int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.high), len(l.low)
}

func removeWaiter(q []*limitWaiter, w *limitWaiter) []*limitWaiter {
	for i, x := range q {
		if x == w {
			return append(q[:i:i], q[i+1:]...)
		}
	}
	return q
}

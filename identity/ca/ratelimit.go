package ca

import (
	"sync"
	"time"

	"github.com/ambit-mesh/ambit/identity"
)

// nodeLimiter is a token bucket per node (and, for Admission, per source
// address): each node may burst (a node
// restarting with a hundred pods) and then sustain rate requests per
// second. Full, idle buckets are dropped when the map grows.
type nodeLimiter struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	clock   identity.Clock
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

const maxBuckets = 10000

func newNodeLimiter(rate float64, burst int, clock identity.Clock) *nodeLimiter {
	return &nodeLimiter{rate: rate, burst: float64(burst), clock: clock, buckets: map[string]*bucket{}}
}

func (l *nodeLimiter) allow(node string) bool {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[node]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[node] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// pruneLocked drops full buckets (they hold no state), then arbitrary ones
// if keys keep coming (many sources): the map never outgrows maxBuckets.
func (l *nodeLimiter) pruneLocked(now time.Time) {
	for n, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, n)
		}
	}
	for n := range l.buckets {
		if len(l.buckets) < maxBuckets {
			break
		}
		delete(l.buckets, n)
	}
}

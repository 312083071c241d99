package metrics

import (
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// nsCache remembers the namespace of each SPIFFE ID seen, because parsing
// and re-validating the ID (identity.ParseWorkload) was 75% of the hook's
// cost and all of its allocations in BenchmarkHooks. It holds at most max
// IDs; past that, IDs are parsed on every call (the label set cap
// collapses them anyway).
type nsCache struct {
	mu  sync.RWMutex
	m   map[spiffeid.ID]string
	max int
}

func newNSCache(max int) *nsCache { return &nsCache{m: map[spiffeid.ID]string{}, max: max} }

func (c *nsCache) namespace(id spiffeid.ID) string {
	if id.IsZero() {
		return Unknown
	}
	c.mu.RLock()
	ns, ok := c.m[id]
	c.mu.RUnlock()
	if ok {
		return ns
	}
	ns = namespace(id)
	c.mu.Lock()
	if len(c.m) < c.max {
		c.m[id] = ns
	}
	c.mu.Unlock()
	return ns
}

// Caps across connections: TLS handshakes in progress and streams per
// source identity, shared by every Server given the same Guard.

package tunnel

import (
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// GuardConfig configures a Guard. A zero field takes its default; a
// negative one disables the cap.
type GuardConfig struct {
	// MaxHandshakes caps TLS handshakes in progress across the servers
	// sharing the Guard; a connection accepted over the cap is closed at
	// once. Default DefaultMaxHandshakes.
	MaxHandshakes int
	// MaxStreamsPerIdentity caps the streams one source identity has open
	// (counted from the CONNECT until its handler returns) across every
	// connection and server sharing the Guard; a CONNECT over the cap is
	// answered 503. Default DefaultMaxStreamsPerIdentity.
	MaxStreamsPerIdentity int
}

// Defaults of GuardConfig (docs/hbone.md has the measurements behind them).
const (
	DefaultMaxHandshakes         = 1024
	DefaultMaxStreamsPerIdentity = 2048
)

// Guard holds caps shared by several Servers: a node's daemon gives one
// Guard to the servers of all its pods, so the caps hold per node. Safe for
// concurrent use.
type Guard struct {
	maxHS, maxID int
	handshakes   atomic.Int64

	mu    sync.Mutex
	perID map[spiffeid.ID]int
}

// NewGuard returns a Guard with cfg's caps.
func NewGuard(cfg GuardConfig) *Guard {
	if cfg.MaxHandshakes == 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.MaxStreamsPerIdentity == 0 {
		cfg.MaxStreamsPerIdentity = DefaultMaxStreamsPerIdentity
	}
	return &Guard{maxHS: cfg.MaxHandshakes, maxID: cfg.MaxStreamsPerIdentity, perID: map[spiffeid.ID]int{}}
}

// startHandshake takes a handshake slot; false over the cap.
func (g *Guard) startHandshake() bool {
	n := g.handshakes.Add(1)
	if g.maxHS > 0 && n > int64(g.maxHS) {
		g.handshakes.Add(-1)
		return false
	}
	return true
}

func (g *Guard) endHandshake() { g.handshakes.Add(-1) }

// acquire takes a stream slot of id; false over the cap.
func (g *Guard) acquire(id spiffeid.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.perID[id]
	if g.maxID > 0 && n >= g.maxID {
		return false
	}
	g.perID[id] = n + 1
	return true
}

func (g *Guard) release(id spiffeid.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := g.perID[id]; n > 1 {
		g.perID[id] = n - 1
	} else {
		delete(g.perID, id)
	}
}

// Streams returns how many streams id holds (for tests and the admin
// dump).
func (g *Guard) Streams(id spiffeid.ID) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.perID[id]
}

// Handshakes returns the TLS handshakes in progress.
func (g *Guard) Handshakes() int { return int(g.handshakes.Load()) }

package metrics

import (
	"hash/maphash"
	"sync"

	"github.com/ambit-mesh/ambit/tunnel"
)

// liveShards splits the live connections so the hooks of concurrent
// connections rarely wait on one another or on a flush.
const liveShards = 32

// liveConn is an open connection whose bytes are counted as they flow:
// what ConnInfo.Live reported at the last flush has been added to s.
type liveConn struct {
	live           func() (int64, int64)
	s              *series
	toDst, fromDst int64
}

type liveShard struct {
	mu    sync.Mutex
	conns map[*tunnel.ConnInfo]*liveConn
}

// liveSet holds the open connections that report ConnInfo.Live. The
// *tunnel.ConnInfo is a key only, never dereferenced after its hook
// returned.
type liveSet struct {
	seed   maphash.Seed
	shards [liveShards]liveShard
}

func newLiveSet() *liveSet {
	l := &liveSet{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].conns = map[*tunnel.ConnInfo]*liveConn{}
	}
	return l
}

func (l *liveSet) shard(ci *tunnel.ConnInfo) *liveShard {
	return &l.shards[maphash.Comparable(l.seed, ci)%liveShards]
}

func (l *liveSet) add(ci *tunnel.ConnInfo, s *series) {
	if ci.Live == nil {
		return
	}
	sh := l.shard(ci)
	sh.mu.Lock()
	sh.conns[ci] = &liveConn{live: ci.Live, s: s}
	sh.mu.Unlock()
}

// end removes ci and returns what was already counted (false when ci was
// not live).
func (l *liveSet) end(ci *tunnel.ConnInfo) (toDst, fromDst int64, s *series, ok bool) {
	sh := l.shard(ci)
	sh.mu.Lock()
	c := sh.conns[ci]
	delete(sh.conns, ci)
	sh.mu.Unlock()
	if c == nil {
		return 0, 0, nil, false
	}
	return c.toDst, c.fromDst, c.s, true
}

// flush adds every open connection's bytes since the last flush.
func (l *liveSet) flush() {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for _, c := range sh.conns {
			to, from := c.live()
			c.s.addBytes(to-c.toDst, from-c.fromDst)
			c.toDst, c.fromDst = max(c.toDst, to), max(c.fromDst, from)
		}
		sh.mu.Unlock()
	}
}

func (l *liveSet) size() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.conns)
		sh.mu.Unlock()
	}
	return n
}

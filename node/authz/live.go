package authz

import "sync"

// Live tracks open connections so that a policy change can close those the
// new policies deny. The data path registers each authorized connection
// with the Request it was decided on and a close function; after every
// Engine.Update the node agent calls Recheck. Safe for concurrent use.
type Live struct {
	mu    sync.Mutex
	next  uint64
	conns map[uint64]liveConn
}

type liveConn struct {
	req   Request
	close func(Decision)
}

// NewLive returns an empty registry.
func NewLive() *Live { return &Live{conns: map[uint64]liveConn{}} }

// Register adds a connection. close is called at most once, from Recheck,
// with the decision that denied the connection; it must not block (close
// the socket, nothing more). The returned function removes the connection
// (call it when the connection ends); it is idempotent.
func (l *Live) Register(req Request, close func(Decision)) (unregister func()) {
	l.mu.Lock()
	l.next++
	id := l.next
	l.conns[id] = liveConn{req: req, close: close}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.conns, id)
		l.mu.Unlock()
	}
}

// Len is the number of registered connections.
func (l *Live) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Recheck re-decides every registered connection against e's current
// policies, unregisters and closes those now denied, and returns how many
// it closed.
func (l *Live) Recheck(e *Engine) int {
	type item struct {
		id uint64
		c  liveConn
	}
	l.mu.Lock()
	items := make([]item, 0, len(l.conns))
	for id, c := range l.conns {
		items = append(items, item{id, c})
	}
	l.mu.Unlock()

	closed := 0
	for _, it := range items {
		d := e.Recheck(it.c.req)
		if d.Allow {
			continue
		}
		l.mu.Lock()
		_, still := l.conns[it.id]
		delete(l.conns, it.id)
		l.mu.Unlock()
		if still { // not ended (or closed by a concurrent Recheck) meanwhile
			it.c.close(d)
			closed++
		}
	}
	return closed
}

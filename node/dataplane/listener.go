package dataplane

import (
	"net"
	"sync/atomic"
	"time"
)

// stoppable wraps a listener owned by the capture: Close stops Accept (a
// deadline in the past) without closing the socket, which must stay in the
// capture's sockmap.
type stoppable struct {
	net.Listener
	stopped    atomic.Bool
	lastAccept atomic.Int64 // unix nanoseconds of the last accepted connection
}

type deadliner interface{ SetDeadline(time.Time) error }

func newStoppable(ln net.Listener) *stoppable {
	if d, ok := ln.(deadliner); ok {
		d.SetDeadline(time.Time{}) // a previous Stop left a deadline behind
	}
	return &stoppable{Listener: ln}
}

// Accept returns net.ErrClosed once stopped.
func (s *stoppable) Accept() (net.Conn, error) {
	if s.stopped.Load() {
		return nil, net.ErrClosed
	}
	c, err := s.Listener.Accept()
	if s.stopped.Load() {
		if c != nil {
			// Accepted in the race with stop: nobody will serve it.
			refuse(c)
		}
		return nil, net.ErrClosed
	}
	if err == nil {
		s.lastAccept.Store(time.Now().UnixNano())
	}
	return c, err
}

// idleSince reports whether nothing was accepted since t.
func (s *stoppable) idleSince(t time.Time) bool { return s.lastAccept.Load() < t.UnixNano() }

// Close stops Accept; the underlying listener stays open. A listener that
// cannot take a deadline is closed (its capture then fails closed).
func (s *stoppable) Close() error {
	s.stop()
	return nil
}

func (s *stoppable) stop() {
	if s.stopped.Swap(true) {
		return
	}
	if d, ok := s.Listener.(deadliner); ok {
		d.SetDeadline(time.Unix(1, 0))
		return
	}
	s.Listener.Close()
}

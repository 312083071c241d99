// Receiving DATA: flow control, the receive queue and direct delivery.

package tunnel

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/net/http2"
)

func (c *conn) handleData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length) // flow control counts padding too
	data := f.Data()     // valid only until the next ReadFrame
	c.mu.Lock()
	if n > c.recvAvail {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvAvail -= n
	s := c.streams[id]
	if s == nil || s.rclosed || s.resetErr != nil {
		idle := c.isIdleStreamID(id)
		reset := c.resetSent.has(id) // ignored: in flight when our RST_STREAM left
		c.mu.Unlock()
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.credit(nil, n)
		if s == nil && !reset {
			return c.writeFrame(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeStreamClosed) })
		}
		return nil
	}
	if n > s.recvAvail {
		c.mu.Unlock()
		c.credit(nil, n)
		c.resetStream(id, http2.ErrCodeFlowControl, fmt.Errorf("%w: stream flow control", ErrProtocol))
		return nil
	}
	s.recvAvail -= n
	free := n - int64(len(data)) // padding is consumed at once
	quiet := false
	switch {
	case s.readerGone:
		free = n
	case len(data) > 0 && s.sinkParked && s.rq.len() == 0:
		// Direct delivery: the splice goroutine is parked with nothing
		// queued, so write to its destination from here, saving a wakeup
		// and a copy (see deliverDirect).
		s.sinkParked = false
		s.directBusy = true
		sink := s.sink
		c.mu.Unlock()
		written := c.deliverDirect(s, sink, data)
		free += int64(written)
		c.mu.Lock()
		s.directBusy = false
		// All delivered and nothing else to report: the splice stays parked
		// (or detached) and need not be woken.
		quiet = s.sinkErr == nil && !s.noDirect && !f.StreamEnded() && s.resetErr == nil && !s.localClosed
		s.sinkParked = quiet
	case len(data) > 0:
		s.rq.push(data)
	}
	if f.StreamEnded() {
		s.rclosed = true
	}
	finished := s.finishedLocked()
	c.mu.Unlock()
	if !quiet {
		s.signalRead()
	}
	if free > 0 {
		c.credit(s, free)
	}
	if finished {
		c.streamDone(s)
	}
	return nil
}

// directWriteTimeout bounds a direct delivery: the read loop serves every
// stream of the connection, so it never waits long on one destination.
const directWriteTimeout = 2 * time.Millisecond

// deliverDirect writes data to the destination of a parked splice from the
// read loop. A destination that does not take it at once (its socket
// buffer is full) gets the rest queued for the splice goroutine, and the
// stream stops using direct delivery. It returns the bytes written.
func (c *conn) deliverDirect(s *Stream, sink net.Conn, data []byte) int {
	_ = sink.SetWriteDeadline(time.Now().Add(directWriteTimeout))
	w, err := sink.Write(data)
	_ = sink.SetWriteDeadline(time.Time{})
	s.nread.Add(int64(w))
	if w == len(data) {
		return w
	}
	c.mu.Lock()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		s.noDirect = true
		s.rq.push(data[w:])
	} else {
		s.sinkErr = err
	}
	c.mu.Unlock()
	return w
}

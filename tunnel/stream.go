package tunnel

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
)

// Stream is one CONNECT stream: a net.Conn carrying the bytes of one
// proxied TCP connection. CloseWrite sends END_STREAM (the peer's
// destination socket sees FIN); Close after both sides finished is a clean
// end, Close before the peer finished sends RST_STREAM(CANCEL); Reset
// aborts at once. A peer's RST_STREAM makes Read and Write fail with an
// error wrapping ErrStreamReset, except a server's RST_STREAM(NO_ERROR)
// (RFC 9113 section 8.1): it only stops the client's sending, so Write
// fails while Read still returns every byte received before it, then
// io.EOF if the server had sent END_STREAM (an error if not).
type Stream struct {
	c  *conn
	id uint32

	// guarded by c.mu
	sendWin     int64
	wclosed     bool // END_STREAM queued or sent
	rclosed     bool // END_STREAM received
	resetErr    error
	stopErr     error // client: the server's RST_STREAM(NO_ERROR) ended our sending (see peerStopped)
	endErr      error // what Read returns after the queue instead of io.EOF (a NO_ERROR reset before END_STREAM)
	rq          chunkQueue
	recvAvail   int64
	recvPending int64
	readerGone  bool // closed locally: incoming data is dropped
	localClosed bool
	removed     bool
	resp        *http2.MetaHeadersFrame // client: final response headers
	respReady   chan struct{}           // client: closed on response or failure
	rstSent     bool                    // guarded by c.wmu
	endSent     bool                    // guarded by c.wmu
	readReady   chan struct{}
	sendReady   chan struct{}
	rdl, wdl    deadline
	local       net.Addr
	remote      net.Addr
	nread       atomic.Int64
	nwritten    atomic.Int64
	onClose     func(*Stream) // client: OnEnd hook
	closedOnce  atomic.Bool
	// direct delivery (see conn.deliverDirect), guarded by c.mu
	sink       net.Conn
	sinkParked bool
	directBusy bool
	noDirect   bool
	sinkErr    error
	resume     atomic.Pointer[func()] // set while a splice is detached
}

func newStream(c *conn) *Stream {
	return &Stream{
		c:         c,
		readReady: make(chan struct{}, 1),
		sendReady: make(chan struct{}, 1),
		sendWin:   c.peerInitWin,
		recvAvail: int64(c.set.StreamWindow),
		local:     c.nc.LocalAddr(),
		remote:    c.nc.RemoteAddr(),
	}
}

// signalRead wakes the stream's reader: a detached splice (see spliceTo)
// is resumed on a new goroutine, a parked one is signalled.
func (s *Stream) signalRead() {
	if fn := s.resume.Swap(nil); fn != nil {
		go (*fn)()
		return
	}
	select {
	case s.readReady <- struct{}{}:
	default:
	}
}

func (s *Stream) signalSend() {
	select {
	case s.sendReady <- struct{}{}:
	default:
	}
}

// finishedLocked: both directions ended or the stream was reset.
func (s *Stream) finishedLocked() bool {
	return !s.removed && (s.resetErr != nil || (s.wclosed && s.rclosed))
}

// PeerID is the verified SPIFFE ID of the other end of the tunnel.
func (s *Stream) PeerID() spiffeid.ID { return s.c.peer }

// LocalAddr is the local address of the tunnel connection.
func (s *Stream) LocalAddr() net.Addr { return s.local }

// RemoteAddr is the tunnel peer (server side) or the CONNECT destination
// (client side).
func (s *Stream) RemoteAddr() net.Addr { return s.remote }

// SetDeadline sets read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.rdl.set(t)
	s.wdl.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (s *Stream) SetReadDeadline(t time.Time) error { s.rdl.set(t); return nil }

// SetWriteDeadline implements net.Conn.
func (s *Stream) SetWriteDeadline(t time.Time) error { s.wdl.set(t); return nil }

// Read implements net.Conn.
func (s *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c := s.c
	for {
		c.mu.Lock()
		if s.resetErr != nil {
			err := s.resetErr
			c.mu.Unlock()
			return 0, err
		}
		if s.rq.len() > 0 {
			n := s.rq.read(p)
			c.mu.Unlock()
			s.nread.Add(int64(n))
			c.credit(s, int64(n))
			return n, nil
		}
		if s.rclosed {
			err := s.endErr
			c.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return 0, err
		}
		if s.localClosed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		c.mu.Unlock()
		select {
		case <-s.readReady:
		case <-s.rdl.wait():
			return 0, errDeadline
		}
	}
}

var (
	errWriteClosed = errors.New("tunnel: write after CloseWrite")
	errLocalClose  = errors.New("closed locally before the peer finished")
)

// reserve waits for send window and takes up to want bytes of it.
func (s *Stream) reserve(want int) (int, error) {
	c := s.c
	for {
		c.mu.Lock()
		switch {
		case s.resetErr != nil:
			err := s.resetErr
			c.mu.Unlock()
			return 0, err
		case s.stopErr != nil:
			err := s.stopErr
			c.mu.Unlock()
			return 0, err
		case s.wclosed || s.localClosed:
			c.mu.Unlock()
			return 0, errWriteClosed
		}
		n := min(int64(want), s.sendWin, c.sendWin, int64(c.maxSend))
		if n > 0 {
			s.sendWin -= n
			c.sendWin -= n
			c.mu.Unlock()
			return int(n), nil
		}
		c.mu.Unlock()
		select {
		case <-s.sendReady:
		case <-s.wdl.wait():
			return 0, errDeadline
		}
	}
}

// Write implements net.Conn: DATA frames within the flow-control windows.
func (s *Stream) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n, err := s.reserve(len(p))
		if err != nil {
			return written, err
		}
		err = s.c.writeFrame(func(fr *http2.Framer) error {
			if s.rstSent || s.endSent {
				return nil // the stream is gone on the wire; the reset is reported below
			}
			return fr.WriteData(s.id, false, p[:n])
		})
		if err != nil {
			return written, err
		}
		written += n
		s.nwritten.Add(int64(n))
		p = p[n:]
	}
	if written == 0 {
		return 0, nil
	}
	s.c.mu.Lock()
	err := s.resetErr
	s.c.mu.Unlock()
	return written, err
}

// CloseWrite sends END_STREAM: the destination sees FIN after the bytes
// already written.
func (s *Stream) CloseWrite() error {
	c := s.c
	c.mu.Lock()
	if s.resetErr != nil {
		err := s.resetErr
		c.mu.Unlock()
		return err
	}
	if s.wclosed {
		c.mu.Unlock()
		return nil
	}
	s.wclosed = true
	c.mu.Unlock()
	return s.sendEnd()
}

// sendEnd writes END_STREAM (unless the stream already ended or was reset)
// and retires the stream if both directions are now done.
func (s *Stream) sendEnd() error {
	c := s.c
	err := c.writeFrame(func(fr *http2.Framer) error {
		if s.rstSent || s.endSent {
			return nil
		}
		s.endSent = true
		return fr.WriteData(s.id, true, nil)
	})
	c.mu.Lock()
	finished := s.finishedLocked()
	c.mu.Unlock()
	if finished {
		c.streamDone(s)
	}
	return err
}

// Close implements net.Conn. It is a clean end (END_STREAM if not yet
// sent) when the peer already finished sending, and RST_STREAM(CANCEL)
// otherwise, like closing a TCP socket with unread data.
func (s *Stream) Close() error {
	c := s.c
	c.mu.Lock()
	if s.localClosed {
		c.mu.Unlock()
		return nil
	}
	s.localClosed = true
	s.readerGone = true
	dropped := int64(s.rq.clear())
	abort := s.resetErr == nil && !s.rclosed
	end := s.resetErr == nil && s.rclosed && !s.wclosed
	s.wclosed = true
	c.mu.Unlock()
	s.signalRead()
	s.signalSend()
	c.credit(nil, dropped)
	switch {
	case abort:
		c.resetStream(s.id, http2.ErrCodeCancel, fmt.Errorf("%w: %w", ErrStreamReset, errLocalClose))
	case end:
		_ = s.sendEnd()
	}
	s.rdl.stop()
	s.wdl.stop()
	if s.onClose != nil && s.closedOnce.CompareAndSwap(false, true) {
		s.onClose(s)
	}
	return nil
}

// Reset aborts the stream with RST_STREAM(CANCEL): the peer's destination
// socket is reset rather than closed.
func (s *Stream) Reset() error {
	s.c.resetStream(s.id, http2.ErrCodeCancel, fmt.Errorf("%w: reset locally", ErrStreamReset))
	return s.Close()
}

// resetStream sends RST_STREAM and fails the local stream.
func (c *conn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.mu.Lock()
	s := c.streams[id]
	c.resetSent.add(id)
	c.mu.Unlock()
	_ = c.writeFrame(func(fr *http2.Framer) error {
		if s != nil {
			if s.rstSent {
				return nil
			}
			s.rstSent = true
		}
		return fr.WriteRSTStream(id, code)
	})
	if s != nil {
		c.failStream(s, err)
	}
}

func (c *conn) peerReset(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	s := c.streams[id]
	c.mu.Unlock()
	if s == nil {
		return
	}
	err := fmt.Errorf("%w: peer sent RST_STREAM %v", ErrStreamReset, code)
	if code == http2.ErrCodeRefusedStream {
		err = fmt.Errorf("%w: peer sent RST_STREAM %v", ErrRefused, code)
	}
	c.wmu.Lock()
	s.rstSent = true // never answer a reset with frames
	c.wmu.Unlock()
	if code == http2.ErrCodeNo && c.isClient && c.peerStopped(s) {
		return
	}
	c.failStream(s, err)
}

// errStopSending marks the error a client stream's writes fail with after
// the server's RST_STREAM(NO_ERROR); Splice recognises it.
var errStopSending = errors.New("peer sent RST_STREAM NO_ERROR: it reads no more of this stream")

// peerStopped applies a server's RST_STREAM(NO_ERROR) to a client stream
// that has its response headers. RFC 9113 section 8.1: a server that has
// sent its complete response (END_STREAM) may reset with NO_ERROR to stop
// the request, and the client must not discard the response. The reset
// therefore ends only our sending: bytes already queued stay readable and
// END_STREAM still reads as io.EOF. Without END_STREAM the response is
// incomplete: the queue is still delivered, then Read fails with endErr
// (the destination never said FIN, so the app must not see one). It
// reports false, leaving the reset to failStream, when the stream has no
// response yet or already failed.
func (c *conn) peerStopped(s *Stream) bool {
	c.mu.Lock()
	if s.resetErr != nil || s.resp == nil {
		c.mu.Unlock()
		return false
	}
	s.stopErr = fmt.Errorf("%w: %w", ErrStreamReset, errStopSending)
	complete := s.rclosed
	if !complete {
		s.rclosed = true
		s.endErr = fmt.Errorf("%w: peer sent RST_STREAM NO_ERROR before END_STREAM: response incomplete", ErrStreamReset)
	}
	s.wclosed = true // nothing more is sent on the stream; CloseWrite has nothing to do
	finished := s.finishedLocked()
	queued := s.rq.len()
	c.mu.Unlock()
	c.log.Debug("hbone: server stopped the request with RST_STREAM NO_ERROR", "stream", s.id, "response_complete", complete, "queued", queued, "peer", c.peer.String())
	s.signalRead()
	s.signalSend()
	if finished {
		c.streamDone(s)
	}
	return true
}

// failStream marks s reset with err (unless it already ended) and wakes
// everything waiting on it.
func (c *conn) failStream(s *Stream, err error) {
	c.mu.Lock()
	if s.resetErr == nil && !(s.rclosed && s.wclosed && s.rq.len() == 0) {
		s.resetErr = err
	}
	if s.respReady != nil && s.resp == nil {
		select {
		case <-s.respReady:
		default:
			close(s.respReady)
		}
	}
	finished := s.finishedLocked()
	c.mu.Unlock()
	s.signalRead()
	s.signalSend()
	if finished {
		c.streamDone(s)
	}
}

// streamDone removes a finished stream from the connection.
func (c *conn) streamDone(s *Stream) {
	c.mu.Lock()
	if s.removed {
		c.mu.Unlock()
		return
	}
	s.removed = true
	delete(c.streams, s.id)
	c.active--
	idle := c.active == 0
	drainDone := idle && (c.draining || c.goneAway) && !c.closed
	weDrain := c.draining && !c.goneAway
	c.armIdleLocked()
	c.mu.Unlock()
	switch {
	case drainDone && weDrain:
		// Our GOAWAY may still be on its way: see goAwayGrace.
		time.AfterFunc(goAwayGrace, func() { c.abort(fmt.Errorf("%w: drained", ErrConnClosed)) })
	case drainDone:
		c.abort(fmt.Errorf("%w: drained", ErrConnClosed))
	}
}

// noteNewPeerStream records a stream ID the peer used (server side) so the
// next one must be larger, even when the stream was rejected.
func (c *conn) noteNewPeerStream(id uint32) {
	if c.isClient {
		return
	}
	c.mu.Lock()
	if id > c.lastPeerID {
		c.lastPeerID = id
	}
	c.mu.Unlock()
}

// ConnectionState is the TLS state of the tunnel carrying the stream.
func (s *Stream) ConnectionState() tls.ConnectionState {
	if s.c.tc == nil {
		return tls.ConnectionState{}
	}
	return s.c.tc.ConnectionState()
}

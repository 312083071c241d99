package tunnel

import (
	"crypto/tls"
	"encoding/binary"
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
// error wrapping ErrStreamReset.
type Stream struct {
	c  *conn
	id uint32

	// guarded by c.mu
	sendWin     int64
	wclosed     bool // END_STREAM queued or sent
	rclosed     bool // END_STREAM received
	resetErr    error
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
			c.mu.Unlock()
			return 0, io.EOF
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

// WriteTo writes received bytes to w straight from the receive queue, with
// no copy buffer (io.Copy uses it).
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	return s.writeTo(w, nil, nil)
}

var errDetached = errors.New("splice detached")

// spliceTo copies the stream to dst (half-closing dst at the end) without
// keeping a goroutine while the stream is quiet: when nothing is queued it
// detaches, the read loop delivers DATA straight to dst, and anything else
// (queued bytes, END_STREAM, a reset, Close) resumes the copy on a new
// goroutine. done is called once with the bytes copied and the error.
func (s *Stream) spliceTo(dst net.Conn, done func(int64, error)) {
	start := s.nread.Load()
	var run func()
	run = func() {
		_, err := s.writeTo(dst, dst, run)
		if errors.Is(err, errDetached) {
			return
		}
		if err == nil {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				if cerr := cw.CloseWrite(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
					err = cerr
				}
			}
		}
		done(s.nread.Load()-start, err)
	}
	go run()
}

// writeTo is WriteTo; with a non-nil sink (w itself, a net.Conn owned by
// Splice) it lets the read loop write to it directly while this goroutine
// is parked.
func (s *Stream) writeTo(w io.Writer, sink net.Conn, resume func()) (int64, error) {
	c := s.c
	start := s.nread.Load()
	for {
		c.mu.Lock()
		if s.sinkErr != nil {
			err := s.sinkErr
			c.mu.Unlock()
			return s.nread.Load() - start, err
		}
		if s.directBusy {
			c.mu.Unlock()
			<-s.readReady // the read loop signals when its write is done
			continue
		}
		if s.resetErr != nil {
			err := s.resetErr
			c.mu.Unlock()
			return s.nread.Load() - start, err
		}
		if s.rq.len() > 0 {
			ch := s.rq.pop()
			c.mu.Unlock()
			n, err := w.Write(ch.data())
			size := int64(ch.w - ch.r)
			releaseChunk(ch)
			s.nread.Add(int64(n))
			c.credit(s, size)
			if err != nil {
				return s.nread.Load() - start, err
			}
			continue
		}
		if s.rclosed {
			c.mu.Unlock()
			return s.nread.Load() - start, nil
		}
		if s.localClosed {
			c.mu.Unlock()
			return s.nread.Load() - start, net.ErrClosed
		}
		parked := sink != nil && !s.noDirect
		if parked {
			s.sink, s.sinkParked = sink, true
			if resume != nil {
				s.resume.Store(&resume)
				c.mu.Unlock()
				return s.nread.Load() - start, errDetached
			}
		}
		c.mu.Unlock()
		var err error
		select {
		case <-s.readReady:
		case <-s.rdl.wait():
			err = errDeadline
		}
		if parked {
			c.mu.Lock()
			s.sinkParked = false // unless the read loop took it (directBusy)
			c.mu.Unlock()
		}
		if err != nil {
			return s.nread.Load() - start, err
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

// ReadFrom copies r into the stream. While r is quiet it waits on a small
// buffer (Settings.IdleReadSize); once bytes flow it switches to a pooled
// Settings.CopyBufferSize buffer and gives it back when r drains, so an
// idle connection holds no copy buffer.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	return s.readFrom(r)
}

// frameHeaderLen is the size of an HTTP/2 frame header.
const frameHeaderLen = 9

// writeInPlace sends buf[off:off+n] as DATA frames, writing each frame's
// header into the bytes just before its payload (off >= 9; bytes before a
// later frame were already sent), so payload is never copied and a frame
// of a 32 KiB buffer fills exactly two TLS records.
func (s *Stream) writeInPlace(buf []byte, off, n int) (int, error) {
	written := 0
	for n > 0 {
		k, err := s.reserve(n)
		if err != nil {
			return written, err
		}
		h := buf[off-frameHeaderLen : off]
		h[0], h[1], h[2] = byte(k>>16), byte(k>>8), byte(k)
		h[3], h[4] = byte(http2.FrameData), 0
		binary.BigEndian.PutUint32(h[5:], s.id&(1<<31-1))
		frame := buf[off-frameHeaderLen : off+k]
		err = s.c.writeFrame(func(*http2.Framer) error {
			if s.rstSent || s.endSent {
				return nil
			}
			_, err := s.c.nc.Write(frame)
			return err
		})
		if err != nil {
			return written, err
		}
		written += k
		s.nwritten.Add(int64(k))
		off += k
		n -= k
	}
	s.c.mu.Lock()
	err := s.resetErr
	s.c.mu.Unlock()
	return written, err
}

// readFrom is copyAdaptive specialised for a stream destination: reads
// land 9 bytes into the buffer so frames are written in place.
func (s *Stream) readFrom(r io.Reader) (int64, error) {
	set := s.c.set
	var small []byte
	if set.IdleReadSize > 0 {
		small = make([]byte, frameHeaderLen+set.IdleReadSize)
	}
	var big *[]byte
	defer func() {
		if big != nil {
			putCopyBuf(set.CopyBufferSize, big)
		}
	}()
	var total int64
	for {
		var buf []byte
		switch {
		case big != nil:
			buf = *big
		case small != nil:
			buf = small
		default:
			big = getCopyBuf(set.CopyBufferSize)
			buf = *big
		}
		n, rerr := r.Read(buf[frameHeaderLen:])
		if n > 0 {
			w, werr := s.writeInPlace(buf, frameHeaderLen, n)
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return total, nil
			}
			return total, rerr
		}
		if small != nil {
			room := len(buf) - frameHeaderLen
			if big == nil && n == room {
				big = getCopyBuf(set.CopyBufferSize)
			} else if big != nil && n < room/2 {
				putCopyBuf(set.CopyBufferSize, big)
				big = nil
			}
		}
	}
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
		_ = c.writeFrame(func(fr *http2.Framer) error {
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
	c.failStream(s, err)
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
	c.armIdleLocked()
	c.mu.Unlock()
	if drainDone {
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

// Copying between a stream and a socket without buffers held while idle.

package tunnel

import (
	"encoding/binary"
	"errors"
	"io"
	"net"

	"golang.org/x/net/http2"
)

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
			err := s.endErr
			c.mu.Unlock()
			return s.nread.Load() - start, err
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

// ReadFrom copies r into the stream. While r is quiet it waits on a small
// buffer (Settings.IdleReadSize); once bytes flow it switches to a pooled
// Settings.CopyBufferSize buffer and gives it back when r drains, so an
// idle connection holds no copy buffer.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	return s.readFrom(r)
}

// frameHeaderLen is the size of an HTTP/2 frame header; tlsRecordLen the
// largest TLS record payload.
const (
	frameHeaderLen = 9
	tlsRecordLen   = 16 << 10
)

// writeInPlace sends buf[off:off+n] as DATA frames, writing each frame's
// header into the bytes just before its payload (off >= 9; bytes before a
// later frame were already sent), so payload is never copied and a frame
// of a 32 KiB buffer fills exactly two TLS records.
func (s *Stream) writeInPlace(buf []byte, off, n int) (int, error) {
	written := 0
	s.c.mu.Lock()
	limit := int(s.c.maxSend)
	s.c.mu.Unlock()
	if limit%tlsRecordLen == 0 {
		limit -= frameHeaderLen // header + payload fill whole TLS records
	}
	for n > 0 {
		k, err := s.reserve(min(n, limit))
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
			if b := s.c.batch; b != nil && batchRecords && len(frame) > tlsRecordLen {
				b.begin()
				_, err := s.c.nc.Write(frame)
				if ferr := b.flush(); err == nil {
					err = ferr
				}
				return err
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
	bufs := newAdaptiveBuf(s.c.set, frameHeaderLen)
	defer bufs.release()
	var total int64
	for {
		buf := bufs.next()
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
		bufs.observe(buf, n)
	}
}

package tunnel

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// endHeadersLocked finishes a header block on a known stream: END_STREAM
// closes its read side, and a stream done both ways is retired. It is
// called with c.mu held and releases it.
func (c *conn) endHeadersLocked(s *Stream, f *http2.MetaHeadersFrame) {
	if f.StreamEnded() {
		s.rclosed = true
	}
	finished := s.finishedLocked()
	c.mu.Unlock()
	s.signalRead()
	if finished {
		c.streamDone(s)
	}
}

// handleHeaders handles a complete header block: a new CONNECT request
// (server) or the response to one (client).
func (c *conn) handleHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	s := c.streams[id]
	if c.isClient {
		if s == nil {
			idle := c.isIdleStreamID(id)
			c.mu.Unlock()
			if idle {
				return http2.ConnectionError(http2.ErrCodeProtocol)
			}
			return nil
		}
		if s.resp == nil {
			if st := f.PseudoValue("status"); len(st) == 3 && st[0] == '1' {
				c.mu.Unlock()
				return nil // informational
			}
			s.resp = f
			close(s.respReady)
		}
		c.endHeadersLocked(s, f)
		return nil
	}
	if s != nil { // trailers: only END_STREAM is meaningful
		c.endHeadersLocked(s, f)
		return nil
	}
	if id%2 == 0 || id <= c.lastPeerID {
		c.mu.Unlock()
		return fmt.Errorf("%w: HEADERS on stream %d out of order", ErrProtocol, id)
	}
	if err := checkRequestFields(f.Fields); err != nil {
		c.mu.Unlock()
		return c.malformed(id, err)
	}
	c.lastPeerID = id
	// A stream counts against MAX_CONCURRENT_STREAMS until its handler has
	// returned, not only while the peer keeps it open: a reset does not
	// free the slot of a handler still authorizing or dialing.
	limit := int(c.set.MaxConcurrentStreams)
	if c.draining || c.closed || c.active >= limit || c.handlers >= limit {
		c.resetSent.add(id)
		c.mu.Unlock()
		if err := c.writeFrame(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) }); err != nil {
			return err
		}
		return c.spend(&c.fl.localResets, RefuseResetFlood)
	}
	s = newStream(c)
	s.id = id
	c.streams[id] = s
	c.active++
	c.handlers++
	ctx, cancel := context.WithCancelCause(c.hctx)
	c.pending[id] = &handlerSlot{cancel: cancel}
	if f.StreamEnded() {
		s.rclosed = true
	}
	c.mu.Unlock()
	c.onRequest(ctx, s, f)
	return nil
}

// answered marks a server stream's request as answered: from now on a
// reset by the peer is an ordinary end of stream, not an early reset.
func (c *conn) answered(id uint32) {
	c.mu.Lock()
	if h := c.pending[id]; h != nil {
		h.answered = true
	}
	c.mu.Unlock()
}

// handlerDone is called when the handler of server stream id returns: its
// slot is free again and its context is released.
func (c *conn) handlerDone(id uint32) {
	c.mu.Lock()
	h := c.pending[id]
	delete(c.pending, id)
	c.handlers--
	c.mu.Unlock()
	if h != nil {
		h.cancel(nil)
	}
}

// respond sends the response HEADERS of a server stream; end also closes
// the stream (error statuses), resetting it with NO_ERROR if the client is
// still sending (RFC 9113 8.1).
func (c *conn) respond(s *Stream, status int, end bool) error {
	c.answered(s.id)
	c.wmu.Lock()
	c.hbuf.Reset()
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	err := c.writeLocked(func(fr *http2.Framer) error {
		if s.rstSent {
			return nil
		}
		if end {
			s.endSent = true
		}
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: end})
	})
	c.wmu.Unlock()
	if !end {
		return err
	}
	c.mu.Lock()
	s.wclosed = true
	still := !s.rclosed && s.resetErr == nil
	finished := s.finishedLocked()
	c.mu.Unlock()
	if still {
		c.resetStream(s.id, http2.ErrCodeNo, fmt.Errorf("%w: rejected with %d", ErrStreamReset, status))
	} else if finished {
		c.streamDone(s)
	}
	return err
}

// tryReserve takes a stream slot on a client connection, if it can take
// one more stream.
func (c *conn) tryReserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.goneAway || c.draining {
		return false
	}
	if uint32(c.active) >= min(c.set.MaxStreamsPerConn, c.peerMaxStream) {
		return false
	}
	c.active++
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	return true
}

func (c *conn) armIdleLocked() {
	if c.active != 0 || !c.isClient || c.idleTimeout <= 0 || c.closed {
		return
	}
	if c.idleTimer == nil {
		c.idleTimer = time.AfterFunc(c.idleTimeout, c.idleCheck)
	} else {
		c.idleTimer.Reset(c.idleTimeout)
	}
}

// idleCheck closes a client connection that carried no stream for
// IdleTimeout.
func (c *conn) idleCheck() {
	c.mu.Lock()
	idle := c.active == 0 && !c.closed && !c.draining
	if idle {
		c.draining = true // no reservation can race with the close
	}
	c.mu.Unlock()
	if !idle {
		return
	}
	c.log.Debug("hbone: closing idle connection", "idle", c.idleTimeout, "peer", c.peer.String())
	_ = c.writeFrame(func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
	c.abort(fmt.Errorf("%w: idle for %v", ErrConnClosed, c.idleTimeout))
}

// openStream sends a CONNECT on a reserved slot and waits for the
// response headers.
func (c *conn) openStream(ctx context.Context, authority string, extra []hpack.HeaderField) (*Stream, *http2.MetaHeadersFrame, error) {
	c.wmu.Lock()
	c.mu.Lock()
	if c.closed || c.goneAway {
		err := c.closeErr
		c.active--
		c.mu.Unlock()
		c.wmu.Unlock()
		return nil, nil, fmt.Errorf("%w: connection going away: %v", ErrRefused, err)
	}
	s := newStream(c)
	s.id = c.nextID
	c.nextID += 2
	s.respReady = make(chan struct{})
	c.streams[s.id] = s
	c.mu.Unlock()
	c.hbuf.Reset()
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
	for _, h := range extra {
		_ = c.henc.WriteField(h)
	}
	var err error
	if c.hbuf.Len() > int(c.maxSendLocked()) {
		err = fmt.Errorf("%w: request headers too large", ErrBadRequest)
	} else {
		err = c.writeLocked(func(fr *http2.Framer) error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
		})
	}
	c.wmu.Unlock()
	if err != nil {
		c.failStream(s, err)
		return nil, nil, err
	}
	select {
	case <-s.respReady:
	case <-ctx.Done():
		c.resetStream(s.id, http2.ErrCodeCancel, ctx.Err())
		_ = s.Close()
		return nil, nil, ctx.Err()
	}
	c.mu.Lock()
	resp, rerr := s.resp, s.resetErr
	c.mu.Unlock()
	if resp == nil {
		_ = s.Close()
		if rerr == nil {
			rerr = ErrStreamReset
		}
		return nil, nil, rerr
	}
	return s, resp, nil
}

func (c *conn) maxSendLocked() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerMaxFrame
}

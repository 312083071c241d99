package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// conn is one HTTP/2 connection carrying CONNECT streams: the
// purpose-built endpoint both Server and Client use. One goroutine (the
// read loop) reads frames; writers serialize on wmu and write frames
// straight to the TLS connection under a write deadline, so a peer that
// stops reading costs at most Settings.WriteTimeout before the connection
// is dropped. Lock order: wmu before mu; mu is never held across I/O.
type conn struct {
	nc       net.Conn
	batch    *recordBatcher // under nc's TLS; nil in tests that build a conn on a bare socket
	tc       *tls.Conn      // nil in tests that run without TLS
	fr       *http2.Framer
	set      Settings
	log      *slog.Logger
	ctr      *counters
	isClient bool
	local    spiffeid.ID // own identity on this connection
	peer     spiffeid.ID // verified peer identity

	// server: called for each new CONNECT stream; it must start the
	// stream's handler on its own goroutine and have it call handlerDone
	// when it returns. ctx is the handler's: cancelled when the peer resets
	// the stream before it is answered, and when the connection ends.
	onRequest func(ctx context.Context, s *Stream, f *http2.MetaHeadersFrame)
	// called once, after the connection closed.
	onClose func(*conn)
	// onRefuse reports a flood guard that closed the connection (optional).
	onRefuse func(reason string)
	now      func() time.Time
	fl       floods         // read loop only
	hdec     *hpack.Decoder // read loop only
	// onMalformed reports a malformed header list (server; optional).
	onMalformed func(id uint32, why error)

	// handler contexts (server): hctx ends with the connection; pending
	// holds every running handler (guarded by mu).
	hctx     context.Context
	hcancel  context.CancelCauseFunc
	pending  map[uint32]*handlerSlot
	handlers int // handlers running (guarded by mu): they count against MAX_CONCURRENT_STREAMS

	wmu     sync.Mutex
	henc    *hpack.Encoder
	hbuf    bytes.Buffer
	wdlSet  time.Time // write deadline currently set
	werr    error
	maxSend uint32 // largest DATA payload we send (guarded by mu)

	mu            sync.Mutex
	streams       map[uint32]*Stream
	active        int    // streams open or reserved (client) / open (server)
	nextID        uint32 // client: next stream ID
	lastPeerID    uint32 // server: highest stream ID the client opened
	sendWin       int64  // connection send window
	peerInitWin   int64
	peerMaxFrame  uint32
	peerMaxStream uint32
	recvAvail     int64        // connection receive window left to the peer
	recvPending   int64        // consumed bytes not yet returned to the peer
	resetSent     recentResets // streams this endpoint reset (frames on them are ignored)
	goneAway      bool         // received GOAWAY: no new streams
	draining      bool         // sent GOAWAY: refuse new streams
	closed        bool
	lingering     bool // the read loop closes nc after goAwayAndLinger
	closeErr      error
	idleTimer     *time.Timer
	idleTimeout   time.Duration // client only
	gotSettings   chan struct{}
	settingsSeen  bool
	done          chan struct{}

	lastRead   atomic.Int64 // unix nanos of the last frame read
	pingSentAt atomic.Int64 // unix nanos of an outstanding PING, 0 if none
	kaTimer    *time.Timer
}

func newConn(nc net.Conn, set Settings, log *slog.Logger, ctr *counters, isClient bool) *conn {
	c := &conn{
		nc:            nc,
		set:           set,
		log:           log,
		ctr:           ctr,
		isClient:      isClient,
		streams:       map[uint32]*Stream{},
		nextID:        1,
		sendWin:       65535,
		peerInitWin:   65535,
		peerMaxFrame:  minFrameSize,
		peerMaxStream: set.MaxStreamsPerConn,
		recvAvail:     int64(set.ConnWindow),
		gotSettings:   make(chan struct{}),
		done:          make(chan struct{}),
		now:           time.Now,
		fl:            newFloods(set.Limits),
		pending:       map[uint32]*handlerSlot{},
	}
	c.hctx, c.hcancel = context.WithCancelCause(context.Background())
	c.tc, _ = nc.(*tls.Conn)
	c.fr = http2.NewFramer(nc, nc)
	c.fr.SetMaxReadFrameSize(set.MaxFrameSize)
	c.hdec = hpack.NewDecoder(4096, nil)
	c.hdec.SetMaxStringLength(int(set.MaxHeaderListSize))
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.maxSend = minFrameSize
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

// start writes the connection preface (client), our SETTINGS and the
// connection window, and checks the peer's preface (server). It does not
// start the read loop.
func (c *conn) start() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.refreshWriteDeadline()
	if c.isClient {
		if _, err := io.WriteString(c.nc, http2.ClientPreface); err != nil {
			return err
		}
	}
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: c.set.StreamWindow},
		{ID: http2.SettingMaxFrameSize, Val: c.set.MaxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: c.set.MaxHeaderListSize},
	}
	if c.isClient {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.set.MaxConcurrentStreams})
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		return err
	}
	if inc := c.set.ConnWindow - 65535; inc > 0 {
		if err := c.fr.WriteWindowUpdate(0, inc); err != nil {
			return err
		}
	}
	if !c.isClient {
		buf := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c.nc, buf); err != nil {
			return fmt.Errorf("reading client preface: %w", err)
		}
		if string(buf) != http2.ClientPreface {
			return fmt.Errorf("%w: bad client preface", ErrProtocol)
		}
	}
	return nil
}

// run is the read loop; it returns when the connection dies.
func (c *conn) run() {
	c.startKeepalive()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.ctr.protocolErrors.Add(1)
				if !c.isClient {
					c.ctr.badRequests.Add(1)
				}
				c.log.Warn("hbone: malformed stream, reset", "stream", se.StreamID, "code", se.Code.String(), "reason", se.Cause, "peer", c.peer.String())
				c.noteNewPeerStream(se.StreamID)
				c.resetStream(se.StreamID, se.Code, fmt.Errorf("%w: %v", ErrProtocol, err))
				if err := c.spend(&c.fl.localResets, RefuseResetFlood); err != nil {
					c.calm(RefuseResetFlood)
					return
				}
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.protocolError(http2.ErrCode(ce), fmt.Sprintf("%v", err))
				return
			}
			c.abort(fmt.Errorf("%w: %w", ErrConnClosed, err))
			return
		}
		if hf, ok := f.(*http2.HeadersFrame); ok {
			mh, bad, err := c.readHeaderBlock(hf)
			if err == nil && bad != nil {
				err = c.malformed(hf.StreamID, bad)
			}
			if err != nil {
				c.readLoopError(err, bad != nil)
				return
			}
			if bad != nil {
				continue
			}
			f = mh
		}
		c.lastRead.Store(time.Now().UnixNano())
		c.pingSentAt.Store(0)
		if !c.settingsSeen {
			if _, ok := f.(*http2.SettingsFrame); !ok {
				c.protocolError(http2.ErrCodeProtocol, "first frame is not SETTINGS")
				return
			}
		}
		if err := c.handle(f); err != nil {
			c.readLoopError(err, true)
			return
		}
	}
}

// readLoopError ends the connection for an error of the read loop: a flood
// (ENHANCE_YOUR_CALM), an HTTP/2 connection error, or a dead transport.
// Any other error of a frame handler (handling) is a PROTOCOL_ERROR.
func (c *conn) readLoopError(err error, handling bool) {
	var calm errCalm
	if errors.As(err, &calm) {
		c.calm(calm.reason)
		return
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		c.protocolError(http2.ErrCode(ce), err.Error())
		return
	}
	if !handling && !errors.Is(err, ErrProtocol) {
		c.abort(fmt.Errorf("%w: %w", ErrConnClosed, err))
		return
	}
	c.protocolError(http2.ErrCodeProtocol, err.Error())
}

func (c *conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.handleSettings(f)
	case *http2.DataFrame:
		if len(f.Data()) == 0 && !f.StreamEnded() {
			if err := c.spend(&c.fl.empty, RefuseEmptyFlood); err != nil {
				return err
			}
		}
		return c.handleData(f)
	case *http2.MetaHeadersFrame:
		return c.handleHeaders(f)
	case *http2.WindowUpdateFrame:
		return c.handleWindowUpdate(f)
	case *http2.RSTStreamFrame:
		if f.StreamID == 0 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if err := c.resetByPeer(f.StreamID); err != nil {
			return err
		}
		c.peerReset(f.StreamID, f.ErrCode)
	case *http2.PingFrame:
		if f.StreamID != 0 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if !f.IsAck() {
			if err := c.spend(&c.fl.pings, RefusePingFlood); err != nil {
				return err
			}
			return c.writeFrame(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
		}
	case *http2.GoAwayFrame:
		c.handleGoAway(f)
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default:
		// PRIORITY and unknown frame types are ignored, within bounds.
		return c.spend(&c.fl.empty, RefuseEmptyFlood)
	}
	return nil
}

// resetByPeer accounts a peer's RST_STREAM before it is applied: a stream
// whose handler has not answered yet has the handler's context cancelled
// (its authorization and dial stop) and counts as an early reset; a reset
// of a stream already gone changes nothing and counts as an empty frame.
func (c *conn) resetByPeer(id uint32) error {
	c.mu.Lock()
	h := c.pending[id]
	early := h != nil && !h.answered
	if early {
		h.answered = true // counted once
	}
	_, live := c.streams[id]
	c.mu.Unlock()
	switch {
	case early:
		h.cancel(errEarlyReset)
		c.ctr.earlyResets.Add(1)
		return c.spend(&c.fl.earlyResets, RefuseRapidReset)
	case !live:
		// Also when both ends reset the stream at once: one such frame is
		// well within the budget, and a peer that keeps resetting a stream
		// we reset is flooding.
		return c.spend(&c.fl.empty, RefuseEmptyFlood)
	}
	return nil
}

// handlerSlot is one running server handler.
type handlerSlot struct {
	cancel   context.CancelCauseFunc
	answered bool // its response was sent (or it was reset early)
}

// errEarlyReset is the cause of a handler context cancelled by the peer's
// RST_STREAM.
var errEarlyReset = fmt.Errorf("%w: peer reset the stream before its answer", ErrStreamReset)

func (c *conn) handleSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if err := c.spend(&c.fl.settings, RefuseSettingsFlood); err != nil {
		return err
	}
	c.mu.Lock()
	var headerTable *uint32
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
				if st.sendWin > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				st.signalSend()
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStream = s.Val
		case http2.SettingHeaderTableSize:
			v := s.Val
			headerTable = &v
		}
		return nil
	})
	c.maxSend = min(c.peerMaxFrame, c.set.MaxFrameSize)
	first := !c.settingsSeen
	c.settingsSeen = true
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if first {
		close(c.gotSettings)
	}
	return c.writeFrame(func(fr *http2.Framer) error {
		if headerTable != nil {
			c.henc.SetMaxDynamicTableSizeLimit(min(*headerTable, 4096))
		}
		return fr.WriteSettingsAck()
	})
}

// isIdleStreamID reports whether id names a stream never opened (a frame
// on it is a connection error). Called with mu held.
func (c *conn) isIdleStreamID(id uint32) bool {
	if c.isClient {
		return id >= c.nextID || id%2 == 0
	}
	return id > c.lastPeerID
}

func (c *conn) handleWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWin += int64(f.Increment)
		if c.sendWin > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		for _, s := range c.streams {
			s.signalSend()
		}
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if c.isIdleStreamID(f.StreamID) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		// Never answered; one may have been in flight when our RST_STREAM
		// left (RFC 9113 5.1), but each still costs a token: a peer that
		// keeps sending them on a stream we reset is flooding.
		return c.spend(&c.fl.empty, RefuseEmptyFlood)
	}
	s.sendWin += int64(f.Increment)
	if s.sendWin > maxWindow {
		s.sendWin = maxWindow
	}
	s.signalSend()
	return nil
}

func (c *conn) handleGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goneAway = true
	var refused []*Stream
	for id, s := range c.streams {
		if id > f.LastStreamID && c.isClient {
			refused = append(refused, s)
		}
	}
	empty := c.active == 0
	c.mu.Unlock()
	c.log.Debug("hbone: peer sent GOAWAY", "last_stream", f.LastStreamID, "code", f.ErrCode.String(), "peer", c.peer.String())
	for _, s := range refused {
		c.failStream(s, fmt.Errorf("%w: GOAWAY", ErrRefused))
	}
	if empty {
		c.abort(fmt.Errorf("%w: peer sent GOAWAY", ErrConnClosed))
	}
}

// credit returns consumed bytes to the peer with WINDOW_UPDATE once a
// quarter of a window has accumulated. s may be nil (connection only).
func (c *conn) credit(s *Stream, n int64) {
	if n <= 0 {
		return
	}
	var sInc, cInc int64
	var id uint32
	c.mu.Lock()
	c.recvPending += n
	if c.recvPending >= int64(c.set.ConnWindow)/4 {
		cInc = c.recvPending
		c.recvAvail += cInc
		c.recvPending = 0
	}
	if s != nil && !s.rclosed && s.resetErr == nil {
		s.recvPending += n
		if s.recvPending >= int64(c.set.StreamWindow)/4 {
			sInc = s.recvPending
			s.recvAvail += sInc
			s.recvPending = 0
			id = s.id
		}
	}
	closed := c.closed
	c.mu.Unlock()
	if closed || (sInc == 0 && cInc == 0) {
		return
	}
	_ = c.writeFrame(func(fr *http2.Framer) error {
		if cInc > 0 {
			if err := fr.WriteWindowUpdate(0, uint32(cInc)); err != nil {
				return err
			}
		}
		if sInc > 0 {
			return fr.WriteWindowUpdate(id, uint32(sInc))
		}
		return nil
	})
}

// writeFrame runs fn with exclusive use of the framer, under a write
// deadline. A failed write kills the connection.
func (c *conn) writeFrame(fn func(*http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(fn)
}

func (c *conn) writeLocked(fn func(*http2.Framer) error) error {
	if c.werr != nil {
		return c.werr
	}
	c.refreshWriteDeadline()
	if err := fn(c.fr); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.ctr.writeTimeouts.Add(1)
			c.log.Warn("hbone: peer stopped reading, closing connection", "timeout", c.set.WriteTimeout, "peer", c.peer.String())
			err = fmt.Errorf("%w: write timeout after %v: peer stopped reading", ErrConnClosed, c.set.WriteTimeout)
		} else {
			err = fmt.Errorf("%w: %w", ErrConnClosed, err)
		}
		c.werr = err
		go c.abort(err)
		return err
	}
	return nil
}

// refreshWriteDeadline keeps the write deadline between 3/4 and 1x
// WriteTimeout ahead without a syscall-free timer reset on every frame.
func (c *conn) refreshWriteDeadline() {
	now := time.Now()
	if c.wdlSet.Sub(now) < c.set.WriteTimeout*3/4 {
		c.wdlSet = now.Add(c.set.WriteTimeout)
		_ = c.nc.SetWriteDeadline(c.wdlSet)
	}
}

// protocolError sends GOAWAY with code and closes the connection.
func (c *conn) protocolError(code http2.ErrCode, why string) {
	c.ctr.protocolErrors.Add(1)
	c.log.Warn("hbone: protocol error, closing connection", "code", code.String(), "reason", why, "peer", c.peer.String())
	c.mu.Lock()
	last := c.lastPeerID
	c.mu.Unlock()
	_ = c.writeFrame(func(fr *http2.Framer) error { return fr.WriteGoAway(last, code, nil) })
	c.abort(fmt.Errorf("%w: %s (%v)", ErrProtocol, why, code))
}

// goAway tells the peer no new streams will be accepted (graceful drain).
func (c *conn) goAway() {
	c.mu.Lock()
	if c.draining || c.closed {
		c.mu.Unlock()
		return
	}
	c.draining = true
	last := c.lastPeerID
	empty := c.active == 0
	c.mu.Unlock()
	_ = c.writeFrame(func(fr *http2.Framer) error { return fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	if empty {
		// Not at once: a stream the peer opened before it read the GOAWAY
		// must be refused (REFUSED_STREAM, which the client retries on
		// another connection), not lost with a connection closed on
		// unread data (a TCP reset the client cannot tell from a failure).
		time.AfterFunc(goAwayGrace, func() { c.abort(fmt.Errorf("%w: drained", ErrConnClosed)) })
	}
}

// goAwayGrace is how long an idle connection stays open after its GOAWAY.
const goAwayGrace = 250 * time.Millisecond

// abort closes the connection at once and fails every stream with err.
func (c *conn) abort(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closeErr = err
	close(c.done)
	c.hcancel(err)
	streams := make([]*Stream, 0, len(c.streams))
	for _, s := range c.streams {
		streams = append(streams, s)
	}
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	if c.kaTimer != nil {
		c.kaTimer.Stop()
	}
	linger := c.lingering
	c.mu.Unlock()
	if !linger {
		_ = c.nc.Close()
	}
	for _, s := range streams {
		c.failStream(s, err)
	}
	if c.onClose != nil {
		c.onClose(c)
	}
}

func (c *conn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

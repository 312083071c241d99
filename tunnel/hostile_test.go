package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
)

// The hostile-peer suite: each test plays one attack with a valid workload
// certificate against a real Server on loopback, prints one line (attack,
// accepted or refused, goroutines and heap before and after) and asserts
// that goroutines and memory stay bounded and that a legitimate client on
// another connection still gets through during the attack.

// footprint is the process's goroutines and live heap, after a GC.
type footprint struct {
	goroutines int
	heap       uint64
}

func measure() footprint {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return footprint{goroutines: runtime.NumGoroutine(), heap: ms.HeapAlloc}
}

// report prints the suite's line for one attack.
func report(t testing.TB, attack string, refused bool, before, peak, after footprint) {
	t.Helper()
	verdict := "accepted"
	if refused {
		verdict = "refused"
	}
	t.Logf("attack=%q result=%s goroutines=%d->peak %d->%d heap=%.1fMiB->%.1fMiB",
		attack, verdict, before.goroutines, peak.goroutines, after.goroutines,
		float64(before.heap)/(1<<20), float64(after.heap)/(1<<20))
}

// blackhole is a destination dialer that never connects: it waits for its
// context, counting dials in flight, the most seen at once, and the dials
// that ended by cancellation.
type blackhole struct {
	inFlight, peak, cancelled, total atomic.Int64
	pass                             *atomic.Bool // while true, dials go through to the real app
}

func (b *blackhole) dial(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	if b.pass != nil && b.pass.Load() {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", dst.String())
	}
	b.total.Add(1)
	n := b.inFlight.Add(1)
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			break
		}
	}
	<-ctx.Done()
	b.inFlight.Add(-1)
	if errors.Is(ctx.Err(), context.Canceled) {
		b.cancelled.Add(1)
	}
	return nil, ctx.Err()
}

// frameSink reads every frame of a raw connection on its own goroutine,
// answering SETTINGS, and records the GOAWAY code (if any).
type frameSink struct {
	goAway  atomic.Int32 // 0: none; else code+1
	resets  atomic.Int64
	headers atomic.Int64
	done    chan struct{}
}

func sink(rc *rawClient) *frameSink {
	s := &frameSink{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			_ = rc.tc.SetReadDeadline(time.Now().Add(20 * time.Second))
			f, err := rc.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				s.goAway.CompareAndSwap(0, int32(f.ErrCode)+1)
			case *http2.RSTStreamFrame:
				s.resets.Add(1)
			case *http2.MetaHeadersFrame:
				s.headers.Add(1)
			}
		}
	}()
	return s
}

func (s *frameSink) code() (http2.ErrCode, bool) {
	v := s.goAway.Load()
	return http2.ErrCode(v - 1), v != 0
}

// legit checks that an ordinary client, on its own connection, is carried
// end to end while an attack runs.
func legit(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.cli.Dial(ctx, e.req())
	if err != nil {
		t.Fatalf("legitimate client refused during the attack: %v", err)
	}
	defer c.Close()
	msg := []byte("legitimate bytes")
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("legitimate write: %v", err)
	}
	buf := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != string(msg) {
		t.Fatalf("legitimate echo: %q %v", buf, err)
	}
}

// peakGoroutines samples runtime.NumGoroutine every 2 ms until stop.
func peakGoroutines() (stop func() int) {
	var peak atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if g := int64(runtime.NumGoroutine()); g > peak.Load() {
				peak.Store(g)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() int { close(done); wg.Wait(); return int(peak.Load()) }
}

// connect writes one CONNECT header block on a raw connection.
func (r *rawClient) connect(authority string) (uint32, error) {
	id := r.next
	r.next += 2
	r.hbuf.Reset()
	_ = r.enc.WriteField(hpackField(":method", "CONNECT"))
	_ = r.enc.WriteField(hpackField(":authority", authority))
	return id, r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true})
}

// TestRapidReset: thousands of CONNECT+RST_STREAM pairs on one connection
// towards a destination whose dial never completes (CVE-2023-44487 class).
// Every reset must cancel its handler's dial, the handlers (hence the
// dials and goroutines) stay bounded by MAX_CONCURRENT_STREAMS, and the
// connection ends with GOAWAY(ENHANCE_YOUR_CALM). "back to back" sends the
// pairs as fast as the connection takes them; "during dials" sends a batch
// of CONNECTs, waits until their dials are in flight, then resets them all.
func TestRapidReset(t *testing.T) {
	for _, mode := range []string{"back to back", "during dials"} {
		t.Run(mode, func(t *testing.T) { testRapidReset(t, mode) })
	}
}

func testRapidReset(t *testing.T, mode string) {
	const maxStreams, pairs = 50, 5000
	var legitNow atomic.Bool
	bh := &blackhole{pass: &legitNow}
	e := newEnv(t, envOpt{settings: Settings{MaxConcurrentStreams: maxStreams}, srvDial: bh.dial})
	before := measure()
	rc := newRawClient(t, e)
	s := sink(rc)
	app := e.app.String()
	peak := peakGoroutines()
	sent := 0
attack:
	for sent < pairs {
		batch := 1
		if mode == "during dials" {
			batch = maxStreams - 10
		}
		if mode == "during dials" { // the previous batch's handlers have returned
			deadline := time.Now().Add(2 * time.Second)
			for bh.inFlight.Load() > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		ids := make([]uint32, 0, batch)
		for range batch {
			id, err := rc.connect(app)
			if err != nil {
				break attack
			}
			ids = append(ids, id)
		}
		if mode == "during dials" {
			deadline := time.Now().Add(2 * time.Second)
			for bh.inFlight.Load() < int64(batch) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		for _, id := range ids {
			if err := rc.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				break attack
			}
			sent++
		}
	}
	// Right after the attack, a legitimate client gets through (its dial
	// goes to the real app).
	legitNow.Store(true)
	legit(t, e)
	legitNow.Store(false)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("attacking connection still open 10s after the attack")
	}
	peakG := peak()
	waitFor(t, func() bool { return bh.inFlight.Load() == 0 })
	after := measure()
	code, ok := s.code()
	report(t, "rapid reset ("+mode+", CONNECT+RST_STREAM, blackholed dial)", ok && code == http2.ErrCodeEnhanceYourCalm,
		before, footprint{goroutines: peakG}, after)
	st := e.srv.Stats()
	t.Logf("pairs sent %d, dials %d, peak dials in flight %d, cancelled %d, early resets %d", sent, bh.total.Load(), bh.peak.Load(), bh.cancelled.Load(), st.EarlyResets)
	if !ok || code != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v (seen %v), want ENHANCE_YOUR_CALM", code, ok)
	}
	if p := bh.peak.Load(); p > maxStreams {
		t.Errorf("%d dials in flight at once, want <= MAX_CONCURRENT_STREAMS %d", p, maxStreams)
	}
	if c, n := bh.cancelled.Load(), bh.total.Load(); c != n {
		t.Errorf("%d of %d dials cancelled; the others ran to their timeout", c, n)
	}
	if mode == "during dials" && (bh.total.Load() < maxStreams || st.EarlyResets < int64(DefaultEarlyResets.Burst)) {
		t.Errorf("only %d dials and %d early resets: the attack did not reach the dial", bh.total.Load(), st.EarlyResets)
	}
	if g := peakG - before.goroutines; g > 3*maxStreams+40 {
		t.Errorf("goroutines grew by %d during the attack, want <= %d", g, 3*maxStreams+40)
	}
	if g := after.goroutines - before.goroutines; g > 20 {
		t.Errorf("goroutines grew by %d after the attack", g)
	}
	if st.EarlyResets == 0 || st.CalmCloses != 1 {
		t.Errorf("stats: early resets %d, calm closes %d, want >0 and 1", st.EarlyResets, st.CalmCloses)
	}
}

// TestMalformedRequests: RFC 9113 sections 8.2.1, 8.2.2, 8.3 and 8.5 make
// these requests malformed: each is answered 400 and reset with
// PROTOCOL_ERROR (section 8.1.1), nothing is dialed, the refusal is
// counted, and the connection keeps serving.
func TestMalformedRequests(t *testing.T) {
	e := newEnv(t, envOpt{})
	app := e.app.String()
	cases := map[string][]string{
		"connection":              {":method", "CONNECT", ":authority", app, "connection", "keep-alive"},
		"keep-alive":              {":method", "CONNECT", ":authority", app, "keep-alive", "timeout=5"},
		"proxy-connection":        {":method", "CONNECT", ":authority", app, "proxy-connection", "close"},
		"transfer-encoding":       {":method", "CONNECT", ":authority", app, "transfer-encoding", "chunked"},
		"upgrade":                 {":method", "CONNECT", ":authority", app, "upgrade", "h2c"},
		"te gzip":                 {":method", "CONNECT", ":authority", app, "te", "gzip"},
		"uppercase name":          {":method", "CONNECT", ":authority", app, "X-Upper", "1"},
		"pseudo after regular":    {":method", "CONNECT", "x-a", "1", ":authority", app},
		"duplicate :authority":    {":method", "CONNECT", ":authority", app, ":authority", app},
		"duplicate :method":       {":method", "CONNECT", ":method", "CONNECT", ":authority", app},
		"CONNECT with :path":      {":method", "CONNECT", ":authority", app, ":path", "/"},
		"CONNECT with :scheme":    {":method", "CONNECT", ":scheme", "https", ":authority", app},
		"CONNECT w/o :authority":  {":method", "CONNECT"},
		"response pseudo-header":  {":method", "CONNECT", ":authority", app, ":status", "200"},
		"value with LF":           {":method", "CONNECT", ":authority", app, "x-a", "a\nb"},
		"value with leading tab":  {":method", "CONNECT", ":authority", app, "x-a", "\tb"},
		"empty name":              {":method", "CONNECT", ":authority", app, "", "x"},
		"name with colon inside":  {":method", "CONNECT", ":authority", app, "x:y", "x"},
		"unknown pseudo-header":   {":method", "CONNECT", ":authority", app, ":bogus", "x"},
		"pseudo after te:trailer": {":method", "CONNECT", "te", "trailers", ":authority", app},
	}
	rc := newRawClient(t, e)
	for name, fields := range cases {
		t.Run(name, func(t *testing.T) {
			rc.t = t
			id := rc.request(fields...)
			status, code := rc.answer(id)
			if status != 400 || code != http2.ErrCodeProtocol {
				t.Fatalf("answer %d then reset %v, want 400 then RST_STREAM(PROTOCOL_ERROR)", status, code)
			}
		})
	}
	rc.t = t
	if got := rc.status(rc.request(":method", "CONNECT", ":authority", app, "te", "trailers", "x-ok", "1")); got != 200 {
		t.Fatalf("good request (te: trailers) after malformed ones: %d", got)
	}
	if n := e.upDials.Load(); n != 1 {
		t.Fatalf("destination dialed %d times, want 1 (the good request)", n)
	}
	if st := e.srv.Stats(); st.Malformed != int64(len(cases)) {
		t.Fatalf("Malformed = %d, want %d", st.Malformed, len(cases))
	}
}

// answer reads frames until stream id's response status and its
// RST_STREAM code (status 0 or code unset when absent).
func (r *rawClient) answer(id uint32) (status int, code http2.ErrCode) {
	r.t.Helper()
	code = http2.ErrCode(0xffffffff)
	_ = r.tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return status, code
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				status, _ = strconv.Atoi(f.PseudoValue("status"))
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return status, f.ErrCode
			}
		case *http2.GoAwayFrame:
			return status, code
		}
	}
}

// floods are frames that cost the receiver work (an answer, a lookup, a
// decode) without moving the peer's data: each is played 20,000 times on
// one connection.
var floodAttacks = []struct {
	name string
	prep func(rc *rawClient, app string) // once before the flood
	send func(rc *rawClient, i int) error
}{
	{"SETTINGS", nil, func(rc *rawClient, _ int) error {
		return rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
	}},
	{"PING", nil, func(rc *rawClient, i int) error { return rc.fr.WritePing(false, [8]byte{byte(i)}) }},
	{"WINDOW_UPDATE on a closed stream", func(rc *rawClient, app string) {
		id, _ := rc.connect(app)
		_ = rc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}, func(rc *rawClient, _ int) error { return rc.fr.WriteWindowUpdate(1, 1) }},
	{"RST_STREAM on a closed stream", func(rc *rawClient, app string) {
		id, _ := rc.connect(app)
		_ = rc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}, func(rc *rawClient, _ int) error { return rc.fr.WriteRSTStream(1, http2.ErrCodeCancel) }},
	{"empty DATA", func(rc *rawClient, app string) { _, _ = rc.connect(app) },
		func(rc *rawClient, _ int) error { return rc.fr.WriteData(1, false, nil) }},
	{"PRIORITY", nil, func(rc *rawClient, i int) error {
		return rc.fr.WritePriority(uint32(2*i+1), http2.PriorityParam{Weight: 1})
	}},
	{"unknown frame type", nil, func(rc *rawClient, _ int) error { return rc.fr.WriteRawFrame(0xbb, 0, 0, nil) }},
	{"CONTINUATION without END_HEADERS", func(rc *rawClient, app string) {
		rc.hbuf.Reset()
		_ = rc.enc.WriteField(hpackField(":method", "CONNECT"))
		_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hbuf.Bytes()})
	}, func(rc *rawClient, _ int) error { return rc.fr.WriteContinuation(1, false, nil) }},
	{"HEADERS over MAX_CONCURRENT_STREAMS", nil, func(rc *rawClient, _ int) error {
		_, err := rc.connect("127.0.0.1:1") // the held dials keep the slots taken
		return err
	}},
	{"malformed HEADERS", nil, func(rc *rawClient, _ int) error {
		rc.hbuf.Reset()
		_ = rc.enc.WriteField(hpackField(":method", "CONNECT"))
		_ = rc.enc.WriteField(hpackField("connection", "close"))
		id := rc.next
		rc.next += 2
		return rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true})
	}},
}

// TestFloods: each flood ends its connection with GOAWAY(ENHANCE_YOUR_CALM)
// long before 20,000 frames, counted; goroutines stay bounded and a
// legitimate client on another connection gets through meanwhile.
func TestFloods(t *testing.T) {
	for _, fl := range floodAttacks {
		t.Run(fl.name, func(t *testing.T) {
			var pass atomic.Bool
			pass.Store(true)
			bh := &blackhole{pass: &pass}
			e := newEnv(t, envOpt{settings: Settings{MaxConcurrentStreams: 20}, srvDial: bh.dial})
			before := measure()
			rc := newRawClient(t, e)
			s := sink(rc)
			pass.Store(fl.name != "HEADERS over MAX_CONCURRENT_STREAMS")
			if fl.prep != nil {
				fl.prep(rc, e.app.String())
			}
			peak := peakGoroutines()
			sent := 0
			for ; sent < 20000; sent++ {
				if fl.send(rc, sent) != nil {
					break
				}
			}
			pass.Store(true)
			legit(t, e)
			select {
			case <-s.done:
			case <-time.After(10 * time.Second):
				t.Fatal("flooding connection still open 10s after the flood")
			}
			peakG := peak()
			_ = rc.tc.Close()
			waitFor(t, func() bool { return bh.inFlight.Load() == 0 })
			after := measure()
			code, ok := s.code()
			report(t, "flood: "+fl.name+" x20000", ok && code == http2.ErrCodeEnhanceYourCalm, before, footprint{goroutines: peakG}, after)
			if !ok || code != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("GOAWAY %v (seen %v), want ENHANCE_YOUR_CALM", code, ok)
			}
			if st := e.srv.Stats(); st.CalmCloses != 1 {
				t.Errorf("CalmCloses = %d, want 1", st.CalmCloses)
			}
			if g := peakG - before.goroutines; g > 100 {
				t.Errorf("goroutines grew by %d during the flood", g)
			}
			if g := after.goroutines - before.goroutines; g > 20 {
				t.Errorf("goroutines grew by %d after the flood", g)
			}
		})
	}
}

var otherID = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/other")

// TestIdentityStreamCap: one source identity cannot hold more streams on
// a node than GuardConfig.MaxStreamsPerIdentity, however many connections
// it opens; the next CONNECT is answered 503 and counted, while another
// identity still gets through.
func TestIdentityStreamCap(t *testing.T) {
	var refusals sync.Map
	e := newEnv(t, envOpt{guard: NewGuard(GuardConfig{MaxStreamsPerIdentity: 5}), refuse: func(ri RefuseInfo) {
		refusals.Store(ri.Reason+" "+ri.Peer.String(), true)
	}})
	app := e.app.String()
	var conns []*rawClient
	for range 3 {
		conns = append(conns, newRawClient(t, e))
	}
	// Five streams over three connections: all established.
	for i := range 5 {
		rc := conns[i%3]
		if got := rc.status(rc.request(":method", "CONNECT", ":authority", app)); got != 200 {
			t.Fatalf("stream %d: %d, want 200", i, got)
		}
	}
	// The sixth, on any connection, is over the identity's cap.
	if got := conns[2].status(conns[2].request(":method", "CONNECT", ":authority", app)); got != 503 {
		t.Fatalf("stream over the identity's cap: %d, want 503", got)
	}
	if st := e.srv.Stats(); st.IdentityRefused != 1 {
		t.Fatalf("IdentityRefused = %d, want 1", st.IdentityRefused)
	}
	if _, ok := refusals.Load(RefuseIdentityStream + " " + srcID.String()); !ok {
		t.Fatal("OnRefuse did not report the identity cap")
	}
	// Another identity is not affected.
	rc := newRawClientAs(t, e, otherID)
	if got := rc.status(rc.request(":method", "CONNECT", ":authority", app)); got != 200 {
		t.Fatalf("other identity: %d, want 200", got)
	}
	// Closing a connection frees its streams' slots once their handlers
	// return.
	_ = conns[0].tc.Close()
	waitFor(t, func() bool { return e.srv.cfg.Guard.Streams(srcID) == 3 })
	if got := conns[1].status(conns[1].request(":method", "CONNECT", ":authority", app)); got != 200 {
		t.Fatalf("after slots were freed: %d, want 200", got)
	}
}

// TestHandshakeCap: connections that never finish their TLS handshake
// (slowloris) take at most GuardConfig.MaxHandshakes slots; one more is
// closed at once and counted, and a legitimate client gets through once
// slots are free.
func TestHandshakeCap(t *testing.T) {
	g := NewGuard(GuardConfig{MaxHandshakes: 3})
	e := newEnv(t, envOpt{guard: g})
	before := measure()
	var slow []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", e.tunnel.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		slow = append(slow, c)
	}
	waitFor(t, func() bool { return g.Handshakes() == 3 })
	extra, err := net.Dial("tcp", e.tunnel.String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection over the handshake cap not closed: %v", err)
	}
	if st := e.srv.Stats(); st.HandshakeRefused != 1 {
		t.Fatalf("HandshakeRefused = %d, want 1", st.HandshakeRefused)
	}
	peak := measure()
	for _, c := range slow {
		_ = c.Close()
	}
	waitFor(t, func() bool { return g.Handshakes() == 0 })
	legit(t, e)
	report(t, "slowloris handshakes over the cap (3)", true, before, peak, measure())
}

// TestLoopRefused: a CONNECT to one of the daemon's own ports (the
// listener it arrives on, or a configured reserved port) on the pod's
// address would nest a tunnel in itself: it is refused with 400, counted,
// and nothing is dialed.
func TestLoopRefused(t *testing.T) {
	e := newEnv(t, envOpt{reserved: []uint16{15001, 15006, 15020}})
	rc := newRawClient(t, e)
	for _, port := range []uint16{e.tunnel.Port(), 15001, 15006, 15020} {
		dst := netip.AddrPortFrom(e.loop, port).String()
		if got := rc.status(rc.request(":method", "CONNECT", ":authority", dst)); got != 400 {
			t.Fatalf("CONNECT %s: %d, want 400", dst, got)
		}
	}
	if n := e.upDials.Load(); n != 0 {
		t.Fatalf("%d dials for loops", n)
	}
	if st := e.srv.Stats(); st.Loops != 4 {
		t.Fatalf("Loops = %d, want 4", st.Loops)
	}
	if got := rc.status(rc.request(":method", "CONNECT", ":authority", e.app.String())); got != 200 {
		t.Fatalf("ordinary CONNECT after loops: %d", got)
	}
}

// TestResetKeepsSlotUntilHandlerReturns: a stream reset by the peer keeps
// its MAX_CONCURRENT_STREAMS slot while its handler is still running (here
// an Authorizer that ignores its context), so resets cannot pile up
// handlers beyond the limit.
func TestResetKeepsSlotUntilHandlerReturns(t *testing.T) {
	release := make(chan struct{})
	var inAuthz atomic.Int32
	e := newEnv(t, envOpt{settings: Settings{MaxConcurrentStreams: 2}, authz: AuthorizerFunc(func(context.Context, AuthzRequest) Decision {
		inAuthz.Add(1)
		<-release
		return Decision{Allow: true}
	})})
	rc := newRawClient(t, e)
	app := e.app.String()
	a, _ := rc.connect(app)
	b, _ := rc.connect(app)
	waitFor(t, func() bool { return inAuthz.Load() == 2 })
	_ = rc.fr.WriteRSTStream(a, http2.ErrCodeCancel)
	_ = rc.fr.WriteRSTStream(b, http2.ErrCodeCancel)
	c, _ := rc.connect(app)
	if got := rc.status(c); got != -1 {
		t.Fatalf("third stream while two reset handlers still run: %d, want REFUSED_STREAM", got)
	}
	if n := inAuthz.Load(); n != 2 {
		t.Fatalf("%d handlers authorizing, want 2", n)
	}
	close(release)
	waitFor(t, func() bool { return e.srv.Stats().EarlyResets == 2 })
	var d uint32
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, _ = rc.connect(app)
		got := rc.status(d)
		if got == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream after the handlers returned: %d, want 200", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// keyConns returns the pool's connections for key, in pool order.
func (p *pool) keyConnsList(key poolKey) []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*conn(nil), p.conns[key]...)
}

func (c *conn) activeStreams() int {
	n, _ := c.load()
	return n
}

// growNow asks the pool to grow key as write contention would, and waits
// for the dial to finish.
func growNow(t *testing.T, e *env, r DialRequest) {
	t.Helper()
	key := newPoolKey(r)
	before := e.cli.Stats().TunnelsGrown
	e.cli.pool.grow(key, r)
	waitFor(t, func() bool { return e.cli.Stats().TunnelsGrown == before+1 })
}

// bulk writes to n streams at once until stop is closed; the sink app
// discards the bytes.
func bulk(t *testing.T, e *env, n int, stop <-chan struct{}) (streams []*Stream, wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		s := e.dial(t)
		streams = append(streams, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				select {
				case <-stop:
					_ = s.CloseWrite()
					_, _ = io.ReadAll(s)
					_ = s.Close()
					return
				default:
				}
				if _, err := s.Write(buf); err != nil {
					t.Errorf("bulk write: %v", err)
					return
				}
			}
		}()
	}
	return streams, wg.Wait
}

// Eight streams sending at once contend for one connection's write lock:
// the pool adds a second connection for the key (and no third, with the
// default bound of 2), and new streams go to the least-loaded one.
func TestPoolGrowsUnderContention(t *testing.T) {
	e := newEnv(t, envOpt{app: sinkApp})
	stop := make(chan struct{})
	streams, wait := bulk(t, e, 8, stop)
	first := streams[0].c
	for _, s := range streams {
		if s.c != first {
			t.Fatal("streams opened before any contention went to different connections")
		}
	}
	waitFor(t, func() bool { return e.cli.Conns() == 2 })
	if st := e.cli.Stats(); st.TunnelsGrown != 1 || st.TunnelsDialed != 2 {
		t.Fatalf("grown %d, dialed %d; want 1 and 2", st.TunnelsGrown, st.TunnelsDialed)
	}
	// Keep sending for a while longer: the bound holds.
	time.Sleep(300 * time.Millisecond)
	if n := e.cli.Conns(); n != 2 {
		t.Fatalf("pool holds %d connections for one key, bound is %d", n, DefaultMaxConnsPerKey)
	}
	// The new connection carries no stream yet, so the next streams go
	// there until both carry the same number.
	var fresh []*Stream
	for i := 0; i < 8; i++ {
		s := e.dial(t)
		fresh = append(fresh, s)
		if s.c == first {
			t.Fatalf("new stream %d went to the loaded connection (%d streams) instead of the new one", i, first.activeStreams())
		}
	}
	close(stop)
	wait()
	for _, s := range fresh {
		echoNothing(t, s)
	}
	if d := e.tunDials.Load(); d != 2 {
		t.Fatalf("tunnel dials %d, want 2", d)
	}
}

// echoNothing half-closes a stream to the sink app and checks its answer.
func echoNothing(t *testing.T, s *Stream) {
	t.Helper()
	_ = s.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "0" {
		t.Fatalf("sink answered %q, %v; want \"0\"", got, err)
	}
	s.Close()
}

// With MaxConnsPerKey 1 contention never adds a connection.
func TestPoolGrowDisabled(t *testing.T) {
	e := newEnv(t, envOpt{app: sinkApp, maxConns: 1})
	stop := make(chan struct{})
	streams, wait := bulk(t, e, 8, stop)
	if streams[0].c.onContended != nil {
		t.Fatal("contention hook set with MaxConnsPerKey 1")
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wait()
	if st := e.cli.Stats(); e.cli.Conns() != 1 || st.TunnelsGrown != 0 || st.TunnelsDialed != 1 {
		t.Fatalf("conns %d, grown %d, dialed %d; want 1, 0, 1", e.cli.Conns(), st.TunnelsGrown, st.TunnelsDialed)
	}
}

// grow respects MaxConnsPerKey, and streams spread evenly over the
// connections it adds.
func TestPoolGrowBoundAndSpread(t *testing.T) {
	e := newEnv(t, envOpt{maxConns: 3})
	r := e.req()
	key := newPoolKey(r)
	var open []*Stream
	for i := 0; i < 4; i++ {
		open = append(open, e.dial(t))
	}
	growNow(t, e, r)
	growNow(t, e, r)
	// At the bound: grow returns at once without dialing.
	e.cli.pool.grow(key, r)
	e.cli.pool.mu.Lock()
	inFlight := e.cli.pool.dialing[key] != nil
	e.cli.pool.mu.Unlock()
	if inFlight || e.cli.Conns() != 3 || e.tunDials.Load() != 3 {
		t.Fatalf("at the bound of 3: dial in flight %v, conns %d, dials %d", inFlight, e.cli.Conns(), e.tunDials.Load())
	}
	// 4 streams on the first connection, none on the others: the next 8
	// streams fill the two new ones to 4 each, then every connection gets
	// one more.
	for i := 0; i < 11; i++ {
		open = append(open, e.dial(t))
	}
	for i, c := range e.cli.pool.keyConnsList(key) {
		if n := c.activeStreams(); n != 5 {
			t.Fatalf("connection %d carries %d streams, want 5 each", i, n)
		}
	}
	for i, s := range open {
		echoOnce(t, s, "spread")
		if i%3 == 0 {
			s.Close()
		}
	}
	for _, s := range open {
		s.Close()
	}
	if st := e.cli.Stats(); st.TunnelsGrown != 2 || st.TunnelsDialed != 3 {
		t.Fatalf("grown %d, dialed %d; want 2 and 3", st.TunnelsGrown, st.TunnelsDialed)
	}
}

// The extra connection is an ordinary pooled one: it closes after
// IdleTimeout without streams while the first one keeps its stream.
func TestPoolGrownConnIdleClose(t *testing.T) {
	e := newEnv(t, envOpt{idle: 100 * time.Millisecond})
	s := e.dial(t)
	echoOnce(t, s, "x")
	growNow(t, e, e.req())
	if e.cli.Conns() != 2 {
		t.Fatalf("pool holds %d connections after growing", e.cli.Conns())
	}
	waitFor(t, func() bool { return e.cli.Conns() == 1 })
	if cs := e.cli.pool.keyConnsList(newPoolKey(e.req())); len(cs) != 1 || cs[0] != s.c {
		t.Fatal("the idle extra connection should have closed, not the one with a stream")
	}
	echoOnce(t, s, "still there")
	// Used, then idle: closes too.
	growNow(t, e, e.req())
	s2 := e.dial(t)
	if s2.c == s.c {
		t.Fatal("the new stream went to the loaded connection")
	}
	echoOnce(t, s2, "on the extra connection")
	_ = s2.CloseWrite()
	_, _ = io.ReadAll(s2)
	s2.Close()
	waitFor(t, func() bool { return e.cli.Conns() == 1 })
	_ = s.CloseWrite()
	_, _ = io.ReadAll(s)
	s.Close()
	waitFor(t, func() bool { return e.cli.Conns() == 0 })
}

// Growing one key leaves other keys alone, and the extra connection
// authenticates like the first: the same source certificate, the same
// expected server identity.
func TestPoolGrowKeepsKeysApart(t *testing.T) {
	e := newEnv(t, envOpt{})
	ra := e.req()
	rb := e.req()
	rb.SourceAddr = netip.MustParseAddrPort("10.0.0.9:4000") // another source IP: another key
	other := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart")
	rc := e.req()
	rc.Source = other // another source identity: another key
	dial := func(r DialRequest) *Stream {
		c, err := e.cli.Dial(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*Stream)
	}
	a, b, c := dial(ra), dial(rb), dial(rc)
	defer a.Close()
	defer b.Close()
	defer c.Close()
	growNow(t, e, ra)
	p := e.cli.pool
	if n := len(p.keyConnsList(newPoolKey(ra))); n != 2 {
		t.Fatalf("grown key holds %d connections, want 2", n)
	}
	for _, r := range []DialRequest{rb, rc} {
		if n := len(p.keyConnsList(newPoolKey(r))); n != 1 {
			t.Fatalf("another key holds %d connections, want 1", n)
		}
	}
	// New streams of the other keys stay on their own connection.
	b2, c2 := dial(rb), dial(rc)
	defer b2.Close()
	defer c2.Close()
	if b2.c != b.c || c2.c != c.c {
		t.Fatal("a stream of an ungrown key left its key's connection")
	}
	a2 := dial(ra)
	defer a2.Close()
	if a2.c == a.c {
		t.Fatal("the new stream of the grown key did not go to its new connection")
	}
	if a2.c.local != srcID || a2.c.peer != dstID || a2.PeerID() != dstID {
		t.Fatalf("extra connection: local %v, peer %v", a2.c.local, a2.c.peer)
	}
	// The server saw the source's own certificate on the extra connection.
	echoOnce(t, a2, "who")
	e.srv.mu.Lock()
	peers := map[spiffeid.ID]int{}
	for sc := range e.srv.conns {
		peers[sc.peer]++
	}
	e.srv.mu.Unlock()
	if peers[srcID] != 3 || peers[other] != 1 {
		t.Fatalf("server connections by client identity: %v; want 3 of %v and 1 of %v", peers, srcID, other)
	}
	for _, s := range []*Stream{a, b, c, a2, b2, c2} {
		echoOnce(t, s, "ok")
	}
}

// Closing the client ends a background dial that is still waiting.
func TestPoolCloseCancelsGrowDial(t *testing.T) {
	e := newEnv(t, envOpt{})
	started := make(chan struct{}, 1)
	var n sync.Mutex
	dials := 0
	cli, err := NewClient(ClientConfig{
		SVIDs: e.cliSVIDs, Bundles: e.bundles, Logger: testLogger(t),
		Dial: func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			n.Lock()
			dials++
			first := dials == 1
			n.Unlock()
			if first {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", dst.String())
			}
			started <- struct{}{}
			<-ctx.Done() // a tunnel address that never answers
			return nil, ctx.Err()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := cli.Dial(context.Background(), e.req())
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, s, "x")
	cli.pool.grow(newPoolKey(e.req()), e.req())
	<-started
	closed := make(chan struct{})
	go func() { _ = cli.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a background dial")
	}
	if _, err := s.Write([]byte("y")); !errors.Is(err, ErrClosed) && !errors.Is(err, ErrConnClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if st := cli.Stats(); st.TunnelsGrown != 0 || st.TunnelDialErrors != 1 {
		t.Fatalf("grown %d, dial errors %d; want 0 and 1", st.TunnelsGrown, st.TunnelDialErrors)
	}
}

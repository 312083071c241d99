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
)

func echoOnce(t *testing.T, s net.Conn, msg string) {
	t.Helper()
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, buf, err)
	}
	_ = s.SetReadDeadline(time.Time{})
}

func TestPoolOneDialForConcurrentCallers(t *testing.T) {
	e := newEnv(t, envOpt{})
	const n = 50
	var wg sync.WaitGroup
	streams := make(chan net.Conn, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c, err := e.cli.Dial(context.Background(), e.req())
			if err != nil {
				t.Error(err)
				return
			}
			streams <- c
		}()
	}
	close(start)
	wg.Wait()
	close(streams)
	for c := range streams {
		echoOnce(t, c, "hi")
		c.Close()
	}
	if d := e.tunDials.Load(); d != 1 {
		t.Fatalf("%d concurrent callers made %d tunnel dials, want 1", n, d)
	}
	if e.cli.Conns() != 1 || e.cli.Stats().TunnelsDialed != 1 {
		t.Fatalf("pool holds %d connections", e.cli.Conns())
	}
}

func TestPoolKeySeparates(t *testing.T) {
	e := newEnv(t, envOpt{})
	a := e.dial(t)
	defer a.Close()
	r := e.req()
	r.SourceAddr = netip.MustParseAddrPort("10.0.0.7:40000") // another source IP: another tunnel
	b, err := e.cli.Dial(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r.SourceAddr = netip.MustParseAddrPort("10.0.0.7:40001") // same IP, other port: same tunnel
	c, err := e.cli.Dial(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d := e.tunDials.Load(); d != 2 {
		t.Fatalf("tunnel dials %d, want 2", d)
	}
}

func TestPoolStreamLimit(t *testing.T) {
	for name, set := range map[string]Settings{
		"client limit":     {MaxStreamsPerConn: 2},
		"peer MAX_STREAMS": {MaxConcurrentStreams: 2},
		"both, peer lower": {MaxStreamsPerConn: 3, MaxConcurrentStreams: 2},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOpt{settings: set})
			var open []*Stream
			for i := 0; i < 5; i++ {
				s := e.dial(t)
				echoOnce(t, s, "x")
				open = append(open, s)
			}
			if d := e.tunDials.Load(); d != 3 {
				t.Fatalf("5 streams at 2 per connection used %d tunnels, want 3", d)
			}
			for _, s := range open {
				s.Close()
			}
		})
	}
}

func TestPoolGoAway(t *testing.T) {
	e := newEnv(t, envOpt{})
	live := e.dial(t)
	echoOnce(t, live, "before")
	e.srv.mu.Lock()
	var conns []*conn
	for c := range e.srv.conns {
		conns = append(conns, c)
	}
	e.srv.mu.Unlock()
	for _, c := range conns {
		c.goAway()
	}
	waitFor(t, func() bool {
		e.cli.pool.mu.Lock()
		defer e.cli.pool.mu.Unlock()
		for _, cs := range e.cli.pool.conns {
			for _, c := range cs {
				c.mu.Lock()
				g := c.goneAway
				c.mu.Unlock()
				if !g {
					return false
				}
			}
		}
		return true
	})
	// The live stream still works; a new one takes a new tunnel.
	echoOnce(t, live, "after GOAWAY")
	fresh := e.dial(t)
	echoOnce(t, fresh, "fresh")
	if d := e.tunDials.Load(); d != 2 {
		t.Fatalf("tunnel dials %d, want 2 (no new stream on a GOAWAY connection)", d)
	}
	live.Close()
	waitFor(t, func() bool { return e.cli.Conns() == 1 })
	fresh.Close()
}

func TestPoolIdleClose(t *testing.T) {
	e := newEnv(t, envOpt{idle: 100 * time.Millisecond})
	s := e.dial(t)
	echoOnce(t, s, "x")
	time.Sleep(200 * time.Millisecond)
	if e.cli.Conns() != 1 {
		t.Fatal("a connection with a live stream was closed as idle")
	}
	_ = s.CloseWrite()
	_, _ = io.ReadAll(s)
	s.Close()
	waitFor(t, func() bool { return e.cli.Conns() == 0 })
	e.dial(t).Close()
	if d := e.tunDials.Load(); d != 2 {
		t.Fatalf("tunnel dials %d, want 2", d)
	}
}

// freezer forwards TCP both ways until frozen, then stops reading and
// writing (a dead peer that keeps the socket open).
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newFreezer(t *testing.T, target netip.AddrPort) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target.String()}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", f.target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			for _, p := range [][2]net.Conn{{c, up}, {up, c}} {
				f.wg.Add(1)
				go func() {
					defer f.wg.Done()
					buf := make([]byte, 4096)
					for {
						n, err := p[0].Read(buf)
						if err != nil {
							return
						}
						f.mu.Lock()
						fr := f.frozen
						f.mu.Unlock()
						if fr {
							continue // swallow
						}
						if _, err := p[1].Write(buf[:n]); err != nil {
							return
						}
					}
				}()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *freezer) addr() netip.AddrPort { return f.ln.Addr().(*net.TCPAddr).AddrPort() }

func TestKeepaliveDetectsDeadPeer(t *testing.T) {
	set := Settings{KeepaliveInterval: 50 * time.Millisecond, KeepaliveTimeout: 150 * time.Millisecond}
	e := newEnv(t, envOpt{settings: set})
	f := newFreezer(t, e.tunnel)
	r := e.req()
	r.Tunnel = f.addr()
	c, err := e.cli.Dial(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c, "alive")
	time.Sleep(300 * time.Millisecond) // quiet, but PINGs are answered
	if e.cli.Stats().KeepaliveDeaths != 0 || e.cli.Conns() != 1 {
		t.Fatal("healthy quiet connection declared dead")
	}
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, ErrKeepalive) {
		t.Fatalf("read on a dead tunnel: %v, want ErrKeepalive", err)
	}
	if e.cli.Stats().KeepaliveDeaths != 1 {
		t.Fatalf("keepalive deaths %d", e.cli.Stats().KeepaliveDeaths)
	}
	waitFor(t, func() bool { return e.cli.Conns() == 0 }) // the dead tunnel leaves the pool
}

func TestDialHonoursDeadline(t *testing.T) {
	e := newEnv(t, envOpt{})
	// A listener that accepts and never speaks TLS.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	r := e.req()
	r.Tunnel = ln.Addr().(*net.TCPAddr).AddrPort()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = e.cli.Dial(ctx, r)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("Dial took %v with a 150ms deadline", d)
	}
}

func TestShutdownDrains(t *testing.T) {
	e := newEnv(t, envOpt{})
	live := e.dial(t)
	echoOnce(t, live, "x")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- e.srv.Shutdown(ctx) }()
	time.Sleep(50 * time.Millisecond)
	echoOnce(t, live, "still alive while draining")
	// No new stream: the tunnel went away and the listener is closed.
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	if c, err := e.cli.Dial(dctx, e.req()); err == nil {
		c.Close()
		t.Fatal("new stream accepted during shutdown")
	}
	if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a live stream past its deadline: %v", err)
	}
	_ = live.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(live); err == nil {
		t.Fatal("stream survived the shutdown deadline")
	}
	live.Close()
}

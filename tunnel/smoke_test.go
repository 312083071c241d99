package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
)

func TestSmokeEcho(t *testing.T) {
	e := newEnv(t, envOpt{})
	s := e.dial(t)
	defer s.Close()
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(s)
	if err != nil || string(b) != "hello" {
		t.Fatalf("got %q, %v", b, err)
	}
}

func TestForeignCAIsDistinct(t *testing.T) {
	if foreignCA.TrustDomain == testCA.TrustDomain {
		t.Fatal("foreign CA shares the trust domain")
	}
}

func TestSmallPeerFrames(t *testing.T) {
	// A peer limiting frames to 16 KiB still gets every byte, in frames it
	// accepts.
	e := newEnv(t, envOpt{settings: Settings{MaxFrameSize: 16 << 10}})
	s := e.dial(t)
	defer s.Close()
	msg := make([]byte, 200<<10)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	go func() {
		_, _ = s.ReadFrom(bytes.NewReader(msg))
		_ = s.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes (%v), want %d identical", len(got), err, len(msg))
	}
}

// flakyListener fails its first Accepts the way a process out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: errors.New("too many open files")}
	}
	return l.Listener.Accept()
}

func TestServeSurvivesAcceptErrors(t *testing.T) {
	e := newEnv(t, envOpt{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.fails.Store(3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, fl, Workload{ID: dstID, Addrs: []netip.Addr{e.loop}}) }()
	r := e.req()
	r.Tunnel = ln.Addr().(*net.TCPAddr).AddrPort()
	c, err := e.cli.Dial(ctx, r)
	if err != nil {
		t.Fatalf("Dial after transient accept errors: %v", err)
	}
	c.Close()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve returned %v", err)
	}
}

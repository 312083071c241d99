package tunnel

import (
	"context"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

func TestServerRefusesStreamsOverLimit(t *testing.T) {
	e := newEnv(t, envOpt{settings: Settings{MaxConcurrentStreams: 2}})
	rc := newRawClient(t, e)
	app := e.app.String()
	a := rc.request(":method", "CONNECT", ":authority", app)
	b := rc.request(":method", "CONNECT", ":authority", app)
	c := rc.request(":method", "CONNECT", ":authority", app)
	got := rc.statuses(a, b, c)
	if got[a] != 200 || got[b] != 200 || got[c] != -1 {
		t.Fatalf("answers %v, want 200, 200 and RST_STREAM for the third stream over MAX_CONCURRENT_STREAMS=2", got)
	}
	if n := e.upDials.Load(); n != 2 {
		t.Fatalf("destination dialed %d times, want 2", n)
	}
}

func TestProtocolViolationsCloseTheConnection(t *testing.T) {
	for name, violate := range map[string]func(rc *rawClient){
		"DATA on a stream never opened": func(rc *rawClient) { _ = rc.fr.WriteData(41, false, []byte("x")) },
		"even stream ID":                func(rc *rawClient) { rc.next = 2; rc.request(":method", "CONNECT", ":authority", "127.0.0.1:1") },
		"PUSH_PROMISE from a client": func(rc *rawClient) {
			_ = rc.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		},
		"connection window overflow": func(rc *rawClient) { _ = rc.fr.WriteWindowUpdate(0, 1<<31-1) },
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOpt{})
			rc := newRawClient(t, e)
			violate(rc)
			if got := rc.status(99); got != -2 {
				t.Fatalf("connection survived (%d)", got)
			}
			waitFor(t, func() bool { return e.srv.Stats().ProtocolErrors >= 1 })
			if e.upDials.Load() != 0 {
				t.Fatal("destination dialed")
			}
		})
	}
}

// TestShutdownRefusesStreamsRacingTheGoAway: a stream a client opens after
// the server's GOAWAY was written but before the client read it is refused
// (REFUSED_STREAM, retried by clients on another connection), not lost with
// an idle connection closed at once on unread data.
func TestShutdownRefusesStreamsRacingTheGoAway(t *testing.T) {
	e := newEnv(t, envOpt{})
	rc := newRawClient(t, e)
	app := e.app.String()
	id := rc.request(":method", "CONNECT", ":authority", app)
	if got := rc.status(id); got != 200 {
		t.Fatalf("first stream: %d", got)
	}
	_ = rc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	waitFor(t, func() bool { return e.srv.Stats().StreamsActive == 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.srv.Shutdown(ctx) }()
	_ = rc.tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended before a GOAWAY: %v", err)
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			break
		}
	}
	late := rc.request(":method", "CONNECT", ":authority", app)
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("stream %d sent after the GOAWAY was lost with the connection (%v), not refused", late, err)
		}
		if r, ok := f.(*http2.RSTStreamFrame); ok && r.StreamID == late {
			if r.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("late stream reset with %v, want REFUSED_STREAM", r.ErrCode)
			}
			break
		}
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

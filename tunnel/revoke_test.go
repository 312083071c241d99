package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// watcher is a hand-written Authorizer whose allowed streams can be
// revoked, as a policy engine's live-connection registry does: each
// stream's revoke function is sent on streams when the server starts
// watching it, and each done call on done.
type watcher struct {
	streams chan func(Decision)
	done    chan struct{}
	// early, when set, revokes inside Watch (an authorizer that re-checks
	// right after registering and finds the stream already denied).
	early *Decision
}

func newWatcher() *watcher {
	return &watcher{streams: make(chan func(Decision), 8), done: make(chan struct{}, 8)}
}

func (w *watcher) Authorize(context.Context, AuthzRequest) Decision {
	return Decision{Allow: true, Reason: "allowed", Policy: "shop/allow-frontend",
		Watch: func(revoke func(Decision)) func() {
			if w.early != nil {
				revoke(*w.early)
			}
			w.streams <- revoke
			return func() { w.done <- struct{}{} }
		}}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func expectNone[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Errorf("unexpected %s", what)
	default:
	}
}

var policyDenied = Decision{Reason: "DENY policy matched", Policy: "shop/deny-frontend"}

// A revoked stream is reset while bytes flow both ways: the client's reads
// and writes fail with ErrStreamReset, the destination's connection is
// reset, the server reports REVOKED with the revoking policy, the
// watcher's done runs once, and the tunnel keeps serving other streams.
func TestRevokeLiveStream(t *testing.T) {
	w := newWatcher()
	appEnded := make(chan error, 4)
	e := newEnv(t, envOpt{authz: w, app: func(c net.Conn) {
		defer c.Close()
		_, err := io.Copy(c, c) // nil only for a clean EOF
		appEnded <- err
	}})
	s := e.dial(t)
	revoke := recv(t, w.streams, "Watch")

	var echoed atomic.Int64
	flowing := make(chan struct{})
	readErr, writeErr := make(chan error, 1), make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := s.Read(buf)
			if echoed.Add(int64(n)) >= 64<<10 && echoed.Load()-int64(n) < 64<<10 {
				close(flowing)
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	go func() {
		chunk := []byte(strings.Repeat("x", 1024))
		for {
			if _, err := s.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	recv(t, flowing, "64 KiB echoed through the stream")

	revoke(policyDenied)
	revoke(Decision{Reason: "second revoke", Policy: "ignored"}) // only the first counts

	if err := recv(t, readErr, "the client's read to fail"); !errors.Is(err, ErrStreamReset) {
		t.Errorf("client read ended with %v, want ErrStreamReset", err)
	}
	if err := recv(t, writeErr, "the client's write to fail"); !errors.Is(err, ErrStreamReset) {
		t.Errorf("client write ended with %v, want ErrStreamReset", err)
	}
	if err := recv(t, appEnded, "the destination's connection to end"); err == nil {
		t.Error("destination saw a clean end of stream, want a reset")
	}
	ci := recv(t, e.ended, "the server's OnEnd")
	if ci.Outcome != OutcomeRevoked || ci.Policy != "shop/deny-frontend" || !errors.Is(ci.Err, ErrRevoked) ||
		ci.Reason != "policy changed: DENY policy matched" {
		t.Errorf("server ConnInfo: outcome %q policy %q reason %q err %v; want %q, the revoking policy and reason, ErrRevoked",
			ci.Outcome, ci.Policy, ci.Reason, ci.Err, OutcomeRevoked)
	}
	if ci.BytesSent < 64<<10 || ci.BytesRecv < 64<<10 || ci.Source != srcID {
		t.Errorf("server ConnInfo: %d bytes sent, %d received, source %v; want >= 64 KiB each way from %v",
			ci.BytesSent, ci.BytesRecv, ci.Source, srcID)
	}
	recv(t, w.done, "done after the stream ended")
	s.Close()
	revoke(policyDenied) // after the end: nothing happens

	st := e.srv.Stats()
	if st.Revoked != 1 || st.Resets != 0 || st.StreamsActive != 0 || st.Streams != 1 {
		t.Errorf("server stats %+v, want 1 stream, 1 revoked, none reset or active", st)
	}

	// The revocation cost the stream, not the tunnel.
	s2 := e.dial(t)
	revoke2 := recv(t, w.streams, "Watch of the second stream")
	if _, err := s2.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	_ = s2.CloseWrite()
	got, err := io.ReadAll(s2)
	if err != nil || string(got) != "still here" {
		t.Fatalf("second stream echoed %q, %v", got, err)
	}
	s2.Close()
	if ci := recv(t, e.ended, "the second stream's OnEnd"); ci.Outcome != OutcomeOK || ci.Policy != "shop/allow-frontend" {
		t.Errorf("second stream: outcome %q policy %q, want ok under the allowing policy", ci.Outcome, ci.Policy)
	}
	recv(t, w.done, "done of the second stream")
	revoke2(policyDenied) // ended: nothing happens
	if n := e.cli.Conns(); n != 1 {
		t.Errorf("client pool has %d connections, want the one tunnel", n)
	}
	if st := e.srv.Stats(); st.Revoked != 1 {
		t.Errorf("Revoked = %d after revoking an ended stream, want 1", st.Revoked)
	}
	expectNone(t, w.done, "done called twice")
	expectNone(t, e.ended, "OnEnd called twice")
}

// A stream revoked before it is established (while the destination is
// dialed, or by Watch itself) is refused like a denied one.
func TestRevokeBeforeEstablished(t *testing.T) {
	t.Run("while dialing", func(t *testing.T) {
		w := newWatcher()
		dialing := make(chan struct{}, 1)
		e := newEnv(t, envOpt{authz: w, srvDial: func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
			dialing <- struct{}{}
			<-ctx.Done() // a destination that does not answer
			return nil, ctx.Err()
		}})
		errc := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := e.cli.Dial(ctx, e.req())
			if err == nil {
				c.Close()
			}
			errc <- err
		}()
		revoke := recv(t, w.streams, "Watch")
		recv(t, dialing, "the server's dial")
		revoke(policyDenied)
		checkRefused(t, e, w, recv(t, errc, "Dial's answer"))
	})
	t.Run("inside Watch", func(t *testing.T) {
		w := newWatcher()
		w.early = &policyDenied
		e := newEnv(t, envOpt{authz: w})
		checkRefused(t, e, w, dialErr(t, e, e.req()))
		recv(t, w.streams, "Watch")
		if n := e.upDials.Load(); n != 0 {
			t.Errorf("destination dialed %d times for a stream revoked before the dial", n)
		}
	})
}

func checkRefused(t *testing.T, e *env, w *watcher, err error) {
	t.Helper()
	if !errors.Is(err, ErrDenied) {
		t.Errorf("Dial: %v, want ErrDenied", err)
	}
	ci := recv(t, e.ended, "the server's OnEnd")
	if ci.Outcome != OutcomeDenied || !errors.Is(ci.Err, ErrRevoked) || !errors.Is(ci.Err, ErrDenied) ||
		ci.Policy != "shop/deny-frontend" || ci.Reason != "policy changed: DENY policy matched" {
		t.Errorf("server ConnInfo: outcome %q policy %q reason %q err %v; want DENY by the revoking policy",
			ci.Outcome, ci.Policy, ci.Reason, ci.Err)
	}
	recv(t, w.done, "done")
	if st := e.srv.Stats(); st.Denied != 1 || st.Streams != 0 || st.Revoked != 0 {
		t.Errorf("server stats %+v, want 1 denied, no stream established", st)
	}
}

// Watch on a denying decision is never called.
func TestWatchIgnoredOnDeny(t *testing.T) {
	var called atomic.Bool
	e := newEnv(t, envOpt{authz: AuthorizerFunc(func(context.Context, AuthzRequest) Decision {
		return Decision{Reason: "no", Watch: func(func(Decision)) func() { called.Store(true); return nil }}
	})})
	if err := dialErr(t, e, e.req()); !errors.Is(err, ErrDenied) {
		t.Fatalf("Dial: %v, want ErrDenied", err)
	}
	<-e.ended
	if called.Load() {
		t.Error("Watch called for a denied stream")
	}
}

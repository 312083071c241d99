package tunnel

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestClientHooks(t *testing.T) {
	var mu sync.Mutex
	var started, ended []ConnInfo
	e := newEnv(t, envOpt{hooks: Hooks{
		OnStart: func(ci *ConnInfo) { mu.Lock(); started = append(started, *ci); mu.Unlock() },
		OnEnd:   func(ci *ConnInfo) { mu.Lock(); ended = append(ended, *ci); mu.Unlock() },
	}})
	s := e.dial(t)
	if _, err := s.Write([]byte("hello hooks")); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	got, _ := io.ReadAll(s)
	s.Close()
	s.Close() // OnEnd once
	mu.Lock()
	defer mu.Unlock()
	if len(started) != 1 || len(ended) != 1 {
		t.Fatalf("OnStart %d times, OnEnd %d times", len(started), len(ended))
	}
	ci := ended[0]
	if ci.Direction != Outbound || ci.Source != srcID || ci.Destination != dstID || ci.DestAddr != e.app || ci.TunnelAddr != e.tunnel {
		t.Errorf("ConnInfo %+v", ci)
	}
	if ci.BytesSent != 11 || ci.BytesRecv != int64(len(got)) || len(got) != 11 || ci.Outcome != OutcomeOK || ci.Err != nil || ci.TraceParent.IsZero() {
		t.Errorf("bytes %d/%d outcome %q err %v", ci.BytesSent, ci.BytesRecv, ci.Outcome, ci.Err)
	}
	if st := e.cli.Stats(); st.Streams != 1 || st.StreamsActive != 0 || st.BytesSent != 11 {
		t.Errorf("client stats %+v", st)
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestBadInputIsLogged(t *testing.T) {
	var logs syncBuffer
	e := newEnv(t, envOpt{
		logger: slog.New(slog.NewTextHandler(&logs, nil)),
		authz: AuthorizerFunc(func(context.Context, AuthzRequest) Decision {
			return Decision{Reason: "no matching policy"}
		}),
	})
	_ = dialErr(t, e, e.req())
	rc := newRawClient(t, e)
	rc.status(rc.request(":method", "CONNECT", ":authority", "10.9.9.9:80"))
	<-e.ended
	<-e.ended
	out := logs.String()
	for _, want := range []string{"status=401", "no matching policy", "status=400", "not served"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestLiveBytesAndHost: ConnInfo.Live counts the bytes of an open stream on
// both endpoints (before OnEnd), and DialRequest.Host reaches the server's
// ConnInfo as the forwarded host.
func TestLiveBytesAndHost(t *testing.T) {
	var mu sync.Mutex
	var cliLive, srvLive func() (int64, int64)
	e := newEnv(t, envOpt{
		hooks:    Hooks{OnStart: func(ci *ConnInfo) { mu.Lock(); cliLive = ci.Live; mu.Unlock() }},
		srvStart: func(ci *ConnInfo) { mu.Lock(); srvLive = ci.Live; mu.Unlock() },
	})
	r := e.req()
	r.Host = "backend.pay.svc.cluster.local"
	c, err := e.cli.Dial(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("x"), 1000)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	// The echo came back: both directions moved 1000 bytes, the stream is
	// still open, and no OnEnd has run.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		cl, sl := cliLive, srvLive
		mu.Unlock()
		if cl != nil && sl != nil {
			cs, cr := cl()
			ss, sr := sl()
			if cs == 1000 && cr == 1000 && ss == 1000 && sr == 1000 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("live bytes: client %d/%d server %d/%d, want 1000 each", cs, cr, ss, sr)
			}
		} else if time.Now().After(deadline) {
			t.Fatal("no Live in OnStart")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case ci := <-e.ended:
		t.Fatalf("ended before close: %+v", ci)
	default:
	}
	_ = c.Close()
	ci := <-e.ended
	if ci.Forwarded.Host != r.Host {
		t.Errorf("server forwarded host %q, want %q", ci.Forwarded.Host, r.Host)
	}
}

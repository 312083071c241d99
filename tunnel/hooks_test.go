package tunnel

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
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

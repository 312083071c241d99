package tunnel

import (
	"bytes"
	"io"
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

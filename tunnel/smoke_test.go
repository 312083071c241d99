package tunnel

import (
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

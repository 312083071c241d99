package tunnel

import (
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestFramesAfterOurResetIgnored: RFC 9113 section 5.1 requires frames that
// arrive on a stream after this endpoint reset it to be ignored: the peer
// had sent them before the RST_STREAM reached it. The server resets a
// malformed request; the peer's DATA already in flight on that stream is
// credited but never answered with one RST_STREAM each (which a peer's
// flood guard would count: TestRevokeLiveStream lost its tunnel to
// ENHANCE_YOUR_CALM that way), and the connection keeps serving.
func TestFramesAfterOurResetIgnored(t *testing.T) {
	e := newEnv(t, envOpt{})
	rc := newRawClient(t, e)
	app := e.app.String()
	id := rc.request(":method", "CONNECT", ":authority", app, "connection", "close")
	// The body the peer had queued before it learnt of the reset.
	const inFlight = 2000
	for i := 0; i < inFlight; i++ {
		if err := rc.fr.WriteData(id, false, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			if err := rc.fr.WriteWindowUpdate(id, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := rc.fr.WritePing(false, [8]byte{'d', 'o', 'n', 'e'}); err != nil {
		t.Fatal(err)
	}
	// Everything the server sent up to its answer to the PING.
	resets := 0
	_ = rc.tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for done := false; !done; {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = rc.fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				resets++
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY(%v) after DATA on a stream the server reset", f.ErrCode)
		case *http2.PingFrame:
			done = f.IsAck() && f.Data == [8]byte{'d', 'o', 'n', 'e'}
		}
	}
	if resets != 1 {
		t.Fatalf("server sent %d RST_STREAM frames on stream %d, want 1 (its own reset; the %d DATA frames after it ignored)", resets, id, inFlight)
	}
	if got := rc.status(rc.request(":method", "CONNECT", ":authority", app)); got != 200 {
		t.Fatalf("a request after the ignored frames: %d, want 200", got)
	}
}

package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawClient speaks HTTP/2 by hand to the server, to send requests the
// Client never would.
type rawClient struct {
	t    *testing.T
	tc   *tls.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	next uint32
}

func newRawClient(t *testing.T, e *env, settings ...http2.Setting) *rawClient {
	t.Helper()
	return newRawClientAs(t, e, srcID, settings...)
}

// newRawClientAs is newRawClient with the client certificate of id.
func newRawClientAs(t *testing.T, e *env, id spiffeid.ID, settings ...http2.Setting) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", e.tunnel.String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(c, clientTLS(e.cliSVIDs, e.bundles, id, []spiffeid.ID{dstID}, Settings{}))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r := &rawClient{t: t, tc: tc, fr: http2.NewFramer(tc, tc), next: 1}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.hbuf)
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return r
}

// request sends a header block and returns its stream ID.
func (r *rawClient) request(fields ...string) uint32 {
	r.t.Helper()
	r.hbuf.Reset()
	for i := 0; i < len(fields); i += 2 {
		_ = r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	id := r.next
	r.next += 2
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
	return id
}

// status reads frames until the response on stream id; it returns the
// status, or -1 for RST_STREAM, or -2 when the connection ends.
func (r *rawClient) status(id uint32) int {
	r.t.Helper()
	return r.statuses(id)[id]
}

// statuses collects the answers (as status) of several streams.
func (r *rawClient) statuses(ids ...uint32) map[uint32]int {
	r.t.Helper()
	got := map[uint32]int{}
	want := map[uint32]bool{}
	for _, id := range ids {
		want[id] = true
	}
	_ = r.tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < len(ids) {
		f, err := r.fr.ReadFrame()
		if err != nil {
			for id := range want {
				if _, ok := got[id]; !ok {
					got[id] = -2
				}
			}
			return got
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if _, seen := got[f.StreamID]; want[f.StreamID] && !seen {
				got[f.StreamID], _ = strconv.Atoi(f.PseudoValue("status"))
			}
		case *http2.RSTStreamFrame:
			if _, seen := got[f.StreamID]; want[f.StreamID] && !seen {
				got[f.StreamID] = -1
			}
		case *http2.GoAwayFrame:
			for id := range want {
				if _, ok := got[id]; !ok {
					got[id] = -2
				}
			}
		}
	}
	return got
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, envOpt{})
	app := e.app.String()
	big := string(bytes.Repeat([]byte("a"), 5<<10))
	cases := []struct {
		name   string
		fields []string
		want   int
	}{
		{"GET", []string{":method", "GET", ":scheme", "https", ":authority", app, ":path", "/"}, 400},
		{"POST without path", []string{":method", "POST", ":authority", app}, 400},
		{"CONNECT with path", []string{":method", "CONNECT", ":authority", app, ":path", "/"}, 400},
		{"CONNECT with scheme", []string{":method", "CONNECT", ":scheme", "https", ":authority", app}, 400},
		{"extended CONNECT", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/", ":authority", app}, 400},
		{"missing authority", []string{":method", "CONNECT"}, 400},
		{"host name authority", []string{":method", "CONNECT", ":authority", "backend.shop:8080"}, 400},
		{"no port", []string{":method", "CONNECT", ":authority", "127.0.0.1"}, 400},
		{"unbracketed IPv6", []string{":method", "CONNECT", ":authority", "::1:80"}, 400},
		{"foreign authority", []string{":method", "CONNECT", ":authority", "10.9.9.9:80"}, 400},
		{"port zero", []string{":method", "CONNECT", ":authority", "127.0.0.1:0"}, 400},
		{"oversize header list", []string{":method", "CONNECT", ":authority", app, "x-a", big, "x-b", big, "x-c", big, "x-d", big}, 400},
		{"invalid header name", []string{":method", "CONNECT", ":authority", app, "Bad Name", "x"}, 400}, // malformed: 400, then RST_STREAM(PROTOCOL_ERROR)
	}
	rc := newRawClient(t, e)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc.t = t
			id := rc.request(tc.fields...)
			got := rc.status(id)
			if got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
	if n := e.upDials.Load(); n != 0 {
		t.Fatalf("destination dialed %d times for bad requests", n)
	}
	if st := e.srv.Stats(); st.BadRequests != int64(len(cases)) || st.TunnelsAccepted != 1 {
		t.Fatalf("BadRequests = %d, want %d (stats %+v)", st.BadRequests, len(cases), st)
	}
	// The connection still serves a good request afterwards.
	rc.t = t
	if got := rc.status(rc.request(":method", "CONNECT", ":authority", app)); got != 200 {
		t.Fatalf("good request after bad ones: %d", got)
	}
}

func TestDenied(t *testing.T) {
	e := newEnv(t, envOpt{authz: AuthorizerFunc(func(context.Context, AuthzRequest) Decision {
		return Decision{Allow: false, Reason: "no policy", Policy: "deny-all"}
	})})
	err := dialErr(t, e, e.req())
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("got %v, want ErrDenied", err)
	}
	if e.upDials.Load() != 0 {
		t.Fatal("destination dialed")
	}
	if e.srv.Stats().Denied != 1 || e.cli.Stats().Denied != 1 {
		t.Fatalf("denied counters: server %d client %d", e.srv.Stats().Denied, e.cli.Stats().Denied)
	}
	ci := <-e.ended
	if ci.Outcome != OutcomeDenied || ci.Policy != "deny-all" || !errors.Is(ci.Err, ErrDenied) {
		t.Fatalf("ConnInfo %+v", ci)
	}
	// A denial costs the stream, not the tunnel.
	if e.cli.Conns() != 1 {
		t.Fatalf("pool has %d connections", e.cli.Conns())
	}
}

func TestUpstreamRefused(t *testing.T) {
	e := newEnv(t, envOpt{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	r := e.req()
	r.Destination = closedPort
	err = dialErr(t, e, r)
	if !errors.Is(err, ErrUpstream) {
		t.Fatalf("got %v, want ErrUpstream", err)
	}
	if e.srv.Stats().UpstreamFailures != 1 {
		t.Fatal("UpstreamFailures not counted")
	}
	if ci := <-e.ended; ci.Outcome != OutcomeUpstreamRefused {
		t.Fatalf("outcome %q", ci.Outcome)
	}
}

func TestForwardedHeadersAreData(t *testing.T) {
	var seen AuthzRequest
	e := newEnv(t, envOpt{authz: AuthorizerFunc(func(_ context.Context, r AuthzRequest) Decision {
		seen = r
		return Decision{Allow: true}
	})})
	rc := newRawClient(t, e)
	id := rc.request(":method", "CONNECT", ":authority", e.app.String(),
		"forwarded", `for="10.1.2.3:5555";host=svc.shop`, "baggage", "k8s.namespace.name=shop,bad key=x",
		"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if got := rc.status(id); got != 200 {
		t.Fatalf("status %d", got)
	}
	rc.tc.Close()
	ci := <-e.ended
	if seen.SourceAddr.Addr() != e.loop || seen.Source != srcID {
		t.Fatalf("authorizer believed a header: %+v", seen)
	}
	if ci.Forwarded.For.String() != "10.1.2.3:5555" || ci.Forwarded.Host != "svc.shop" {
		t.Errorf("forwarded %+v", ci.Forwarded)
	}
	if len(ci.Baggage) != 1 || ci.Baggage.Get("k8s.namespace.name") != "shop" {
		t.Errorf("baggage %+v", ci.Baggage)
	}
	if ci.TraceParent.String() != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Errorf("traceparent %v", ci.TraceParent)
	}
}

// A client that opens a stream to a destination streaming without end and
// then stops reading: the server's writes block, and after WriteTimeout
// the connection is dropped; reading from the destination stops at the
// flow-control window, so memory stays bounded.
func TestPeerStopsReading(t *testing.T) {
	var appWrote sync.WaitGroup
	var total atomic.Int64
	appWrote.Add(1)
	e := newEnv(t, envOpt{
		settings: Settings{WriteTimeout: 300 * time.Millisecond, StreamWindow: 64 << 20, ConnWindow: 64 << 20},
		app: func(c net.Conn) {
			defer appWrote.Done()
			defer c.Close()
			buf := make([]byte, 64<<10)
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			for {
				n, err := c.Write(buf)
				total.Add(int64(n))
				if err != nil {
					return
				}
			}
		},
	})
	rc := newRawClient(t, e, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = rc.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	id := rc.request(":method", "CONNECT", ":authority", e.app.String())
	if got := rc.status(id); got != 200 {
		t.Fatalf("status %d", got)
	}
	// Stop reading. The server must give up on its own.
	waitFor(t, func() bool { return e.srv.Stats().WriteTimeouts == 1 })
	appWrote.Wait() // the destination is released (reset), not wedged
	if n := total.Load(); n > 256<<20 {
		t.Fatalf("server pulled %d MiB from the destination for a peer that does not read", n>>20)
	}
}

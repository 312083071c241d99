package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ambit-mesh/ambit/identity/identitytest"
)

// The tests in this file put ambit's Client in front of servers that end a
// CONNECT stream the way RFC 9113 section 8.1 allows: the complete
// response with END_STREAM, then RST_STREAM(NO_ERROR) to stop the request.

const answerLen = 256 << 10

// rawServerConn is one connection of a hand-written HBONE server: the test
// scripts its frames. A read loop answers SETTINGS and PING and reports
// the client's frames on events.
type rawServerConn struct {
	t      *testing.T
	tc     *tls.Conn
	fr     *http2.Framer
	wmu    sync.Mutex
	enc    *hpack.Encoder
	hbuf   bytes.Buffer
	events chan rawEvent
	pong   chan struct{}
}

// rawEvent summarises a frame the client sent (the frame itself is only
// valid until the next read).
type rawEvent struct {
	stream    uint32
	headers   bool
	endStream bool
	data      int
}

// newRawServer serves every accepted connection with script, on TLS
// presenting dstID's certificate from ca, and returns the listener's
// address. The connection stays open after script returns, until the
// client closes it or the test ends.
func newRawServer(t *testing.T, ca *identitytest.CA, script func(*rawServerConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := serverTLS(identitytest.NewSource(ca), x509bundle.NewSet(ca.Bundle(), testCA.Bundle()), dstID, Settings{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				rs := &rawServerConn{t: t, tc: tls.Server(nc, cfg), events: make(chan rawEvent, 1024), pong: make(chan struct{}, 1)}
				if err := rs.tc.Handshake(); err != nil {
					return
				}
				preface := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(rs.tc, preface); err != nil || string(preface) != http2.ClientPreface {
					return
				}
				rs.fr = http2.NewFramer(rs.tc, rs.tc)
				rs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				rs.enc = hpack.NewEncoder(&rs.hbuf)
				rs.write(func(fr *http2.Framer) error { return fr.WriteSettings() })
				loop := make(chan struct{})
				go func() { defer close(loop); rs.readLoop() }()
				script(rs)
				<-loop
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func (rs *rawServerConn) readLoop() {
	defer close(rs.events)
	for {
		f, err := rs.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				rs.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if f.IsAck() {
				rs.pong <- struct{}{}
			} else {
				rs.write(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
			}
		case *http2.MetaHeadersFrame:
			rs.events <- rawEvent{stream: f.StreamID, headers: true, endStream: f.StreamEnded()}
		case *http2.DataFrame:
			rs.events <- rawEvent{stream: f.StreamID, endStream: f.StreamEnded(), data: len(f.Data())}
		}
	}
}

func (rs *rawServerConn) write(fn func(*http2.Framer) error) {
	rs.wmu.Lock()
	defer rs.wmu.Unlock()
	_ = rs.tc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := fn(rs.fr); err != nil {
		rs.t.Errorf("raw server: write: %v", err)
	}
}

// next waits for a frame from the client matching ok.
func (rs *rawServerConn) next(what string, ok func(rawEvent) bool) rawEvent {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, open := <-rs.events:
			if !open {
				rs.t.Errorf("raw server: connection ended waiting for %s", what)
				return ev
			}
			if ok(ev) {
				return ev
			}
		case <-timeout:
			rs.t.Errorf("raw server: no %s from the client", what)
			return rawEvent{}
		}
	}
}

func (rs *rawServerConn) connect() uint32 {
	return rs.next("CONNECT", func(ev rawEvent) bool { return ev.headers }).stream
}

func (rs *rawServerConn) respond(id uint32, status string) {
	rs.write(func(fr *http2.Framer) error {
		rs.hbuf.Reset()
		_ = rs.enc.WriteField(hpack.HeaderField{Name: ":status", Value: status})
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rs.hbuf.Bytes(), EndHeaders: true})
	})
}

// send writes b as DATA frames of 16 KiB, the last with END_STREAM if end.
func (rs *rawServerConn) send(id uint32, b []byte, end bool) {
	for len(b) > 0 || end {
		n := min(len(b), 16<<10)
		last := end && n == len(b)
		rs.write(func(fr *http2.Framer) error { return fr.WriteData(id, last, b[:n]) })
		b = b[n:]
		if last {
			return
		}
	}
}

func (rs *rawServerConn) reset(id uint32, code http2.ErrCode) {
	rs.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}

// sync returns once the client has processed every frame sent so far: its
// read loop answers a PING after handling what came before it.
func (rs *rawServerConn) sync() {
	rs.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{'s', 'y', 'n', 'c'}) })
	select {
	case <-rs.pong:
	case <-time.After(10 * time.Second):
		rs.t.Error("raw server: no PING ack")
	}
}

// dialTo opens a stream through addr, expecting dstID.
func dialTo(t *testing.T, addr netip.AddrPort) (net.Conn, error) {
	t.Helper()
	cli, err := NewClient(ClientConfig{SVIDs: identitytest.NewSource(testCA), Bundles: x509bundle.NewSet(testCA.Bundle()), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cli.Dial(ctx, DialRequest{
		Source: srcID, Destination: netip.MustParseAddrPort("127.0.0.1:9"), Tunnel: addr, Expected: []spiffeid.ID{dstID},
	})
}

type spliceResult struct {
	toStream, toApp int64
	err             error
}

// spliceApp splices st to a loopback TCP connection, as the daemon does
// for a captured application, and returns the application's end.
func spliceApp(t *testing.T, st net.Conn) (net.Conn, <-chan spliceResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	proxy, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan spliceResult, 1)
	go func() {
		a, b, err := Splice(context.Background(), proxy, st, Settings{})
		res <- spliceResult{a, b, err}
	}()
	return app, res
}

func waitSplice(t *testing.T, res <-chan spliceResult) spliceResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Splice did not return")
		return spliceResult{}
	}
}

// completeThenNoError: the whole answer, END_STREAM, then RST_STREAM
// (NO_ERROR) while the request is still open, as Go's HTTP/2 server and
// h2 do when the handler (the destination) finishes first.
func completeThenNoError(answer []byte) func(*rawServerConn) {
	return func(rs *rawServerConn) {
		id := rs.connect()
		rs.respond(id, "200")
		rs.send(id, answer, true)
		rs.reset(id, http2.ErrCodeNo)
		rs.sync()
	}
}

func TestClientKeepsResponseBeforeNoErrorReset(t *testing.T) {
	answer := pattern(7, answerLen)

	t.Run("Read", func(t *testing.T) {
		synced := make(chan struct{})
		addr := newRawServer(t, testCA, func(rs *rawServerConn) {
			completeThenNoError(answer)(rs)
			close(synced)
		})
		c, err := dialTo(t, addr)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close()
		<-synced // the reset was handled before the first Read
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, answer) {
			t.Fatalf("read %d bytes (equal: %v), err %v; want the %d-byte answer and io.EOF", len(got), bytes.Equal(got, answer), err, len(answer))
		}
		if _, err := c.Write([]byte("more")); !errors.Is(err, ErrStreamReset) {
			t.Fatalf("Write after the server stopped the request: %v, want ErrStreamReset", err)
		}
		if err := c.(*Stream).CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
	})

	t.Run("Splice", func(t *testing.T) {
		synced := make(chan struct{})
		addr := newRawServer(t, testCA, func(rs *rawServerConn) {
			completeThenNoError(answer)(rs)
			close(synced)
		})
		c, err := dialTo(t, addr)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		<-synced
		app, res := spliceApp(t, c)
		_ = app.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(app) // nil error: a FIN, not a reset
		if err != nil || !bytes.Equal(got, answer) {
			t.Fatalf("app read %d bytes (equal: %v), err %v; want the %d-byte answer and FIN", len(got), bytes.Equal(got, answer), err, len(answer))
		}
		// The app keeps sending for a while; nobody reads it, nothing breaks.
		if _, err := app.Write(pattern(8, 1<<20)); err != nil {
			t.Fatalf("app write after the answer: %v", err)
		}
		_ = app.(*net.TCPConn).CloseWrite()
		r := waitSplice(t, res)
		if r.err != nil || r.toApp != answerLen {
			t.Fatalf("Splice: %d bytes to the app, err %v; want %d and nil", r.toApp, r.err, answerLen)
		}
	})

	t.Run("reset before END_STREAM", func(t *testing.T) {
		// The request is complete (END_STREAM sent), the server sends part
		// of an answer and resets with NO_ERROR without END_STREAM: what
		// arrived is delivered, then the truncation is an error, not EOF.
		part := answer[:64<<10]
		synced := make(chan struct{})
		addr := newRawServer(t, testCA, func(rs *rawServerConn) {
			id := rs.connect()
			rs.respond(id, "200")
			rs.next("request END_STREAM", func(ev rawEvent) bool { return ev.stream == id && ev.endStream })
			rs.send(id, part, false)
			rs.reset(id, http2.ErrCodeNo)
			rs.sync()
			close(synced)
		})
		c, err := dialTo(t, addr)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close()
		if err := c.(*Stream).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		<-synced
		got, err := io.ReadAll(c)
		if !bytes.Equal(got, part) || !errors.Is(err, ErrStreamReset) {
			t.Fatalf("read %d bytes (equal: %v), err %v; want the %d bytes sent, then ErrStreamReset", len(got), bytes.Equal(got, part), err, len(part))
		}
	})

	t.Run("reset before the response", func(t *testing.T) {
		addr := newRawServer(t, testCA, func(rs *rawServerConn) {
			rs.reset(rs.connect(), http2.ErrCodeNo)
		})
		if c, err := dialTo(t, addr); !errors.Is(err, ErrStreamReset) {
			if c != nil {
				_ = c.Close()
			}
			t.Fatalf("Dial: %v, want ErrStreamReset", err)
		}
	})
}

// TestClientThroughGoHTTP2Server: Go's own HTTP/2 server as the HBONE
// server. Its handler writes the answer and returns without reading the
// request body, so the server sends END_STREAM and RST_STREAM(NO_ERROR);
// the application behind ambit's client must get every byte and a FIN.
func TestClientThroughGoHTTP2Server(t *testing.T) {
	answer := pattern(9, answerLen)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig: serverTLS(identitytest.NewSource(testCA), x509bundle.NewSet(testCA.Bundle()), dstID, Settings{}),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodConnect || r.ProtoMajor != 2 {
				http.Error(w, "CONNECT over HTTP/2 only", http.StatusMethodNotAllowed)
				return
			}
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(answer)
		}),
		ErrorLog: nil,
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-served
	})
	addr := ln.Addr().(*net.TCPAddr).AddrPort()

	for _, tc := range []struct {
		name     string
		appSends int // bytes the app writes before reading the answer
	}{{"app silent", 0}, {"app sending", 64 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialTo(t, addr)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			app, res := spliceApp(t, c)
			_ = app.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.appSends > 0 {
				if _, err := app.Write(pattern(10, tc.appSends)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := io.ReadAll(app)
			if err != nil || !bytes.Equal(got, answer) {
				t.Fatalf("app read %d bytes (equal: %v), err %v; want the %d-byte answer and FIN", len(got), bytes.Equal(got, answer), err, len(answer))
			}
			_ = app.Close()
			r := waitSplice(t, res)
			if r.err != nil || r.toApp != answerLen {
				t.Fatalf("Splice: %d bytes to the app, err %v; want %d and nil", r.toApp, r.err, answerLen)
			}
		})
	}
}

package interop

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"istio.io/istio/pkg/hbone"
	istiolog "istio.io/istio/pkg/log"

	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/tunnel"
)

var (
	ca = identitytest.MustCA("cluster.local")
	// rogueCA signs certificates for the same trust domain with a key
	// nobody trusts.
	rogueCA  = identitytest.MustCA("cluster.local")
	clientID = spiffeid.RequireFromString("spiffe://cluster.local/ns/interop/sa/client")
	serverID = spiffeid.RequireFromString("spiffe://cluster.local/ns/interop/sa/server")
	otherID  = spiffeid.RequireFromString("spiffe://cluster.local/ns/interop/sa/impostor")
	loopback = netip.MustParseAddr("127.0.0.1")
)

const (
	echoLen   = 64 << 10
	answerLen = 256 << 10
	timeout   = 15 * time.Second
)

func TestMain(m *testing.M) {
	if s := istiolog.FindScope("hbone"); s != nil {
		s.SetOutputLevel(istiolog.WarnLevel) // Istio logs every CONNECT at info
	}
	m.Run()
}

func pattern(seed uint64, n int) []byte {
	b := make([]byte, n+8)
	r := rand.New(rand.NewPCG(seed, ^seed))
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// appResult is what a destination connection received, and how its read
// side ended.
type appResult struct {
	got []byte
	err error
}

// newApp starts a destination application on loopback that serves every
// connection with behave and reports each result.
func newApp(t *testing.T, behave func(*net.TCPConn) appResult) (netip.AddrPort, <-chan appResult) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan appResult, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(timeout))
				results <- behave(c)
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).AddrPort(), results
}

// echo sends back what it reads and half-closes after the client did.
func echo(c *net.TCPConn) appResult {
	_, err := io.Copy(c, c)
	_ = c.CloseWrite()
	return appResult{err: err}
}

// sinkThenAnswer reads to EOF (the client half-closed), then answers with
// the SHA-256 of what it got and closes.
func sinkThenAnswer(c *net.TCPConn) appResult {
	got, err := io.ReadAll(c)
	sum := sha256.Sum256(got)
	_, _ = c.Write(sum[:])
	return appResult{got, err}
}

// speaksFirst sends its whole answer and half-closes before reading
// anything: the destination ends first while the client is still open.
func speaksFirst(c *net.TCPConn) appResult {
	_, _ = c.Write(pattern(2, answerLen))
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	return appResult{got, err}
}

func waitApp(t *testing.T, results <-chan appResult) appResult {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(timeout):
		t.Fatal("the destination did not finish")
		return appResult{}
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	_ = ln.Close()
	return addr
}

func tlsCert(svid *x509svid.SVID) tls.Certificate {
	c := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, cert := range svid.Certificates {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c
}

// spiffeTLS is the TLS configuration Istio's package is given: present
// svid, verify the peer's chain with ca's bundle and accept only a peer in
// trust domain of want's, and only want itself when want is set.
func spiffeTLS(svid *x509svid.SVID, want spiffeid.ID) *tls.Config {
	authorize := tlsconfig.AuthorizeMemberOf(ca.TrustDomain)
	if !want.IsZero() {
		authorize = tlsconfig.AuthorizeID(want)
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS12,
		Certificates:          []tls.Certificate{tlsCert(svid)},
		ClientAuth:            tls.RequireAnyClientCert,
		InsecureSkipVerify:    true, // VerifyPeerCertificate checks the SPIFFE chain
		VerifyPeerCertificate: tlsconfig.VerifyPeerCertificate(x509bundle.NewSet(ca.Bundle()), authorize),
	}
}

// ambitServer runs ambit's HBONE server for the workload serverID on
// loopback; it allows only clientID.
func ambitServer(t *testing.T) netip.AddrPort {
	t.Helper()
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		SVIDs:   identitytest.NewSource(ca),
		Bundles: x509bundle.NewSet(ca.Bundle()),
		Authorizer: tunnel.AuthorizerFunc(func(_ context.Context, r tunnel.AuthzRequest) tunnel.Decision {
			if r.Source != clientID {
				return tunnel.Decision{Reason: "only " + clientID.String() + " may connect"}
			}
			return tunnel.Decision{Allow: true}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ctx, ln, tunnel.Workload{ID: serverID, Addrs: []netip.Addr{loopback}})
	}()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		cancel()
		<-served
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// istioServer runs Istio's HBONE server (hbone.NewServer) on loopback
// with TLS presenting svid and HTTP/2 enabled on the listener.
func istioServer(t *testing.T, svid *x509svid.SVID) netip.AddrPort {
	t.Helper()
	srv := hbone.NewServer()
	srv.Protocols.SetHTTP2(true)
	srv.TLSConfig = spiffeTLS(svid, spiffeid.ID{})
	srv.ErrorLog = nil
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Istio server: %v", err)
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// istioDial opens a connection to dst through the HBONE server at tun
// with Istio's dialer, presenting svid and expecting serverID.
func istioDial(t *testing.T, svid *x509svid.SVID, expect spiffeid.ID, tun, dst netip.AddrPort) (net.Conn, error) {
	t.Helper()
	d := hbone.NewDialer(hbone.Config{ProxyAddress: tun.String(), TLS: spiffeTLS(svid, expect)})
	type res struct {
		c   net.Conn
		err error
	}
	done := make(chan res, 1)
	go func() {
		c, err := d.Dial("tcp", dst.String()) // Istio's dialer takes no context
		done <- res{c, err}
	}()
	select {
	case r := <-done:
		if r.c != nil {
			_ = r.c.SetDeadline(time.Now().Add(timeout))
			t.Cleanup(func() { _ = r.c.Close() })
		}
		return r.c, r.err
	case <-time.After(timeout):
		t.Fatal("Istio's dialer hung")
		return nil, nil
	}
}

// ambitDial opens a stream to dst through the HBONE server at tun with
// ambit's client, presenting clientID's certificate from svids and
// expecting serverID.
func ambitDial(t *testing.T, svids *identitytest.Source, tun, dst netip.AddrPort) (*tunnel.Stream, error) {
	t.Helper()
	cli, err := tunnel.NewClient(tunnel.ClientConfig{SVIDs: svids, Bundles: x509bundle.NewSet(ca.Bundle())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := cli.Dial(ctx, tunnel.DialRequest{Source: clientID, Destination: dst, Tunnel: tun, Expected: []spiffeid.ID{serverID}})
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	return c.(*tunnel.Stream), nil
}

// exchange writes out while reading len(out) bytes back.
func exchange(t *testing.T, c net.Conn, out []byte) []byte {
	t.Helper()
	werr := make(chan error, 1)
	go func() { _, err := c.Write(out); werr <- err }()
	back := make([]byte, len(out))
	if _, err := io.ReadFull(c, back); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	return back
}

func equal(a, b []byte) bool { return sha256.Sum256(a) == sha256.Sum256(b) }

// TestIstioClientThroughAmbitServer: Istio's HBONE dialer (x/net/http2's
// Transport) through ambit's HBONE server.
func TestIstioClientThroughAmbitServer(t *testing.T) {
	tun := ambitServer(t)
	client := ca.MustMint(clientID)

	t.Run("echo", func(t *testing.T) {
		dst, results := newApp(t, echo)
		c, err := istioDial(t, client, serverID, tun, dst)
		if err != nil {
			t.Fatalf("Istio dial through ambit: %v", err)
		}
		out := pattern(1, echoLen)
		if back := exchange(t, c, out); !equal(back, out) {
			t.Fatal("echo differs")
		}
		_ = c.Close()
		if r := waitApp(t, results); r.err != nil {
			t.Fatalf("destination: %v", r.err)
		}
	})

	t.Run("client half-closes", func(t *testing.T) {
		// Istio's dialer returns one end of a net.Pipe, which has no
		// CloseWrite: Close is its half-close (the request body ends with
		// END_STREAM), after which its answer can no longer be read.
		dst, results := newApp(t, sinkThenAnswer)
		c, err := istioDial(t, client, serverID, tun, dst)
		if err != nil {
			t.Fatalf("Istio dial through ambit: %v", err)
		}
		out := pattern(3, answerLen)
		if _, err := c.Write(out); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		if r := waitApp(t, results); r.err != nil || !equal(r.got, out) {
			t.Fatalf("destination got %d bytes (equal: %v), read ended with %v; want %d bytes and EOF", len(r.got), equal(r.got, out), r.err, len(out))
		}
	})

	t.Run("destination closes first", func(t *testing.T) {
		dst, _ := newApp(t, speaksFirst)
		c, err := istioDial(t, client, serverID, tun, dst)
		if err != nil {
			t.Fatalf("Istio dial through ambit: %v", err)
		}
		got, err := io.ReadAll(c)
		if err != nil || !equal(got, pattern(2, answerLen)) {
			t.Fatalf("Istio client read %d bytes (equal: %v), err %v; want %d bytes and EOF", len(got), equal(got, pattern(2, answerLen)), err, answerLen)
		}
	})

	t.Run("refused destination", func(t *testing.T) {
		_, err := istioDial(t, client, serverID, tun, closedPort(t))
		if err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("Istio dial to a closed port through ambit: %v, want a 503", err)
		}
	})

	t.Run("untrusted CA", func(t *testing.T) {
		if _, err := istioDial(t, rogueCA.MustMint(clientID), serverID, tun, closedPort(t)); err == nil {
			t.Fatal("ambit accepted a client certificate from an untrusted CA")
		}
	})

	t.Run("identity not allowed", func(t *testing.T) {
		dst, _ := newApp(t, echo)
		_, err := istioDial(t, ca.MustMint(otherID), serverID, tun, dst)
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("Istio dial as %s: %v, want a 401 from ambit's authorizer", otherID, err)
		}
	})

	t.Run("server identity not expected", func(t *testing.T) {
		if _, err := istioDial(t, client, otherID, tun, closedPort(t)); err == nil {
			t.Fatalf("Istio's dialer accepted ambit's server presenting %s while expecting %s", serverID, otherID)
		}
	})
}

// TestAmbitClientThroughIstioServer: ambit's HBONE client through Istio's
// HBONE server (net/http with HTTP/2).
func TestAmbitClientThroughIstioServer(t *testing.T) {
	tun := istioServer(t, ca.MustMint(serverID))
	svids := identitytest.NewSource(ca)

	t.Run("echo", func(t *testing.T) {
		dst, results := newApp(t, echo)
		st, err := ambitDial(t, svids, tun, dst)
		if err != nil {
			t.Fatalf("ambit dial through Istio: %v", err)
		}
		defer st.Close()
		out := pattern(4, echoLen)
		if back := exchange(t, st, out); !equal(back, out) {
			t.Fatal("echo differs")
		}
		if err := st.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if rest, err := io.ReadAll(st); err != nil || len(rest) != 0 {
			t.Fatalf("after CloseWrite: %d more bytes, err %v; want EOF", len(rest), err)
		}
		if r := waitApp(t, results); r.err != nil {
			t.Fatalf("destination: %v", r.err)
		}
	})

	t.Run("client half-closes", func(t *testing.T) {
		dst, results := newApp(t, sinkThenAnswer)
		st, err := ambitDial(t, svids, tun, dst)
		if err != nil {
			t.Fatalf("ambit dial through Istio: %v", err)
		}
		defer st.Close()
		out := pattern(5, answerLen)
		if _, err := st.Write(out); err != nil {
			t.Fatal(err)
		}
		if err := st.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		answer, err := io.ReadAll(st)
		want := sha256.Sum256(out)
		if err != nil || string(answer) != string(want[:]) {
			t.Fatalf("answer after the half-close: %x, err %v; want %x and EOF", answer, err, want)
		}
		if r := waitApp(t, results); r.err != nil || !equal(r.got, out) {
			t.Fatalf("destination got %d bytes (equal: %v), err %v", len(r.got), equal(r.got, out), r.err)
		}
	})

	t.Run("destination closes first", func(t *testing.T) {
		// Istio's server ends the response when the destination's FIN
		// arrives and resets the still-open request with NO_ERROR
		// (RFC 9113 section 8.1): the whole answer must still arrive.
		dst, _ := newApp(t, speaksFirst)
		st, err := ambitDial(t, svids, tun, dst)
		if err != nil {
			t.Fatalf("ambit dial through Istio: %v", err)
		}
		defer st.Close()
		got, err := io.ReadAll(st)
		if err != nil || !equal(got, pattern(2, answerLen)) {
			t.Fatalf("ambit client read %d bytes (equal: %v), err %v; want %d bytes and EOF", len(got), equal(got, pattern(2, answerLen)), err, answerLen)
		}
	})

	t.Run("refused destination", func(t *testing.T) {
		// Istio's server flushes 200 before it dials, so a refused
		// destination is a stream that ends at once, not a 503.
		st, err := ambitDial(t, svids, tun, closedPort(t))
		if err != nil {
			if !errors.Is(err, tunnel.ErrUpstream) {
				t.Fatalf("dial to a closed port through Istio: %v, want ErrUpstream or an empty stream", err)
			}
			return
		}
		defer st.Close()
		t.Log("Istio's server answered 200 for a refused destination; the stream must end at once, empty")
		if got, err := io.ReadAll(st); err != nil || len(got) != 0 {
			t.Fatalf("stream to a closed port: %d bytes, err %v; want an empty stream", len(got), err)
		}
	})

	t.Run("server presents another identity", func(t *testing.T) {
		imp := istioServer(t, ca.MustMint(otherID))
		if _, err := ambitDial(t, svids, imp, closedPort(t)); !errors.Is(err, tunnel.ErrIdentityMismatch) {
			t.Fatalf("server presenting %s: %v, want ErrIdentityMismatch", otherID, err)
		}
	})

	t.Run("server certificate from an untrusted CA", func(t *testing.T) {
		rogue := istioServer(t, rogueCA.MustMint(serverID))
		if _, err := ambitDial(t, svids, rogue, closedPort(t)); !errors.Is(err, tunnel.ErrTLS) {
			t.Fatalf("server with an untrusted certificate: %v, want ErrTLS", err)
		}
	})

	t.Run("client certificate from an untrusted CA", func(t *testing.T) {
		if _, err := ambitDial(t, identitytest.NewSource(rogueCA), tun, closedPort(t)); !errors.Is(err, tunnel.ErrTLS) {
			t.Fatalf("Istio's server and a client certificate from an untrusted CA: %v, want ErrTLS", err)
		}
	})
}

package tunnel

import (
	"context"
	"crypto/fips140"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
)

// The FIPS mode profile (Settings.FIPS): both ends negotiate TLS 1.3,
// AES-GCM and P-256, and a client offering only algorithms outside the
// profile is refused in the handshake, logged and counted. These tests run
// in the normal runtime and, by `make test-fips`, under
// GODEBUG=fips140=only, where the Go module itself is the only crypto.

// TestFIPSRuntimeAsRequested fails `make test-fips` if its GODEBUG did not
// reach the test binary (the tests would then prove nothing about the
// module).
func TestFIPSRuntimeAsRequested(t *testing.T) {
	if os.Getenv("AMBIT_TEST_FIPS140") != "only" {
		t.Skip("not run by make test-fips")
	}
	if !fips140.Enabled() || !fips140.Enforced() {
		t.Fatalf("fips140 enabled=%v enforced=%v under GODEBUG=%q", fips140.Enabled(), fips140.Enforced(), os.Getenv("GODEBUG"))
	}
}

func TestFIPSProfileNegotiates(t *testing.T) {
	e := newEnv(t, envOpt{settings: Settings{FIPS: true}})
	// The tunnel's own client and server agree.
	s := e.dial(t)
	if _, err := s.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	if b, err := io.ReadAll(s); err != nil || string(b) != "hi" {
		t.Fatalf("echo %q %v", b, err)
	}
	s.Close()
	// What they agree on, seen from a client with the same configuration.
	tc := dialTLS(t, e, clientTLS(e.cliSVIDs, e.bundles, srcID, []spiffeid.ID{dstID}, Settings{FIPS: true}))
	cs := tc.ConnectionState()
	if cs.Version != tls.VersionTLS13 || cs.CurveID != tls.CurveP256 ||
		(cs.CipherSuite != tls.TLS_AES_128_GCM_SHA256 && cs.CipherSuite != tls.TLS_AES_256_GCM_SHA384) {
		t.Fatalf("negotiated %s, %s, %s", tls.VersionName(cs.Version), cs.CurveID, tls.CipherSuiteName(cs.CipherSuite))
	}
	t.Logf("negotiated %s, %s, %s (fips140 enabled=%v enforced=%v)", tls.VersionName(cs.Version), cs.CurveID,
		tls.CipherSuiteName(cs.CipherSuite), fips140.Enabled(), fips140.Enforced())
	_ = tc.Close()
	// A FIPS client still reaches a server in the default profile.
	plain := newEnv(t, envOpt{})
	tc = dialTLS(t, plain, clientTLS(plain.cliSVIDs, plain.bundles, srcID, []spiffeid.ID{dstID}, Settings{FIPS: true}))
	if cs := tc.ConnectionState(); cs.CurveID != tls.CurveP256 {
		t.Fatalf("FIPS client to a default server: %s", cs.CurveID)
	}
	_ = tc.Close()
}

func TestFIPSExcludesTLS12(t *testing.T) {
	set := Settings{FIPS: true, AllowTLS12: true}
	e := newEnv(t, envOpt{})
	if _, err := NewClient(ClientConfig{SVIDs: e.cliSVIDs, Bundles: e.bundles, Settings: set}); !errors.Is(err, ErrConfig) ||
		!strings.Contains(err.Error(), "FIPS excludes AllowTLS12") {
		t.Fatalf("client: %v", err)
	}
	if _, err := NewServer(ServerConfig{SVIDs: e.srvSVIDs, Bundles: e.bundles, Authorizer: AllowAll(), Settings: set}); !errors.Is(err, ErrConfig) ||
		!strings.Contains(err.Error(), "FIPS excludes AllowTLS12") {
		t.Fatalf("server: %v", err)
	}
}

func TestFIPSRefusals(t *testing.T) {
	cases := []struct {
		name string
		logs string // in the server's log line
		// mod adjusts a client configuration of the default profile.
		mod func(*tls.Config)
		// rewrite, if set, edits the ClientHello on the wire.
		rewrite func([]byte) []byte
		// notUnderModule: the FIPS runtime's own client cannot make
		// this offer (crypto/tls drops the algorithm before sending).
		notUnderModule bool
		// defaultRefuses: the default profile refuses this offer too.
		defaultRefuses bool
	}{
		{name: "X25519 only", logs: "key exchange groups [X25519], none of [CurveP256 CurveP384]", mod: func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.X25519} }, notUnderModule: true},
		{name: "X25519MLKEM768 only", logs: "key exchange groups [X25519MLKEM768], none of", mod: func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768} }},
		{name: "P-521 only", logs: "key exchange groups [CurveP521], none of", mod: func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.CurveP521} }, defaultRefuses: true},
		{name: "TLS 1.2 only", logs: "the client offers no TLS 1.3 (versions [TLS 1.2])", mod: func(c *tls.Config) {
			c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			c.CipherSuites = tls12Suites
		}, defaultRefuses: true},
		{name: "ChaCha20-Poly1305 only", logs: "the client offers cipher suites [TLS_CHACHA20_POLY1305_SHA256 0x0A0A", rewrite: onlyChaCha20, defaultRefuses: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.notUnderModule && fips140.Enabled() {
				t.Skip("in FIPS 140-3 mode crypto/tls itself cannot offer this; the other cases cover the refusal there")
			}
			var logs syncBuffer
			var mu sync.Mutex
			var refusals []RefuseInfo
			e := newEnv(t, envOpt{
				settings: Settings{FIPS: true},
				logger:   slog.New(slog.NewTextHandler(&logs, nil)),
				refuse: func(ri RefuseInfo) {
					mu.Lock()
					defer mu.Unlock()
					refusals = append(refusals, ri)
				},
			})
			conf := clientTLS(e.cliSVIDs, e.bundles, srcID, []spiffeid.ID{dstID}, Settings{})
			if tc.mod != nil {
				tc.mod(conf)
			}
			err := handshake(t, e, conf, tc.rewrite)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			ci := <-e.ended
			if ci.Outcome != OutcomeTLSFailure {
				t.Fatalf("outcome %q", ci.Outcome)
			}
			if st := e.srv.Stats(); st.AlgorithmRefused != 1 || st.TLSFailures != 1 {
				t.Fatalf("server stats %+v", st)
			}
			mu.Lock()
			got := append([]RefuseInfo(nil), refusals...)
			mu.Unlock()
			if len(got) != 1 || got[0].Reason != RefuseTLSAlgorithms {
				t.Fatalf("refusals %+v", got)
			}
			out := logs.String()
			if !strings.Contains(out, "the client offers no algorithm this endpoint's TLS profile allows") || !strings.Contains(out, tc.logs) ||
				!strings.Contains(out, "reason=tls_algorithms") || !strings.Contains(out, "fips=true") {
				t.Fatalf("log:\n%s", out)
			}
			t.Logf("client: %v; server: %s", err, strings.TrimSpace(out))

			// The same offer reaches a server in the default profile
			// (what makes it a refusal of the profile, not of the client),
			// unless that profile refuses it too.
			if !tc.defaultRefuses && !fips140.Enabled() {
				plain := newEnv(t, envOpt{})
				conf := clientTLS(plain.cliSVIDs, plain.bundles, srcID, []spiffeid.ID{dstID}, Settings{})
				tc.mod(conf)
				if err := handshake(t, plain, conf, nil); err != nil {
					t.Fatalf("default server refused %s: %v", tc.name, err)
				}
			}
		})
	}
}

// Peer certificates must carry approved keys; CheckFIPSSession is what the
// profile runs on every handshake.
func TestFIPSSessionCheck(t *testing.T) {
	good := tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256, CurveID: tls.CurveP256,
		PeerCertificates: testCA.MustMint(srcID).Certificates}
	if err := identity.CheckFIPSSession(good); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*tls.ConnectionState){
		"TLS 1.2":  func(cs *tls.ConnectionState) { cs.Version = tls.VersionTLS12 },
		"ChaCha20": func(cs *tls.ConnectionState) { cs.CipherSuite = tls.TLS_CHACHA20_POLY1305_SHA256 },
		"X25519":   func(cs *tls.ConnectionState) { cs.CurveID = tls.X25519 },
		"hybrid":   func(cs *tls.ConnectionState) { cs.CurveID = tls.X25519MLKEM768 },
	} {
		cs := good
		mod(&cs)
		if err := identity.CheckFIPSSession(cs); !errors.Is(err, identity.ErrNotApproved) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// dialTLS completes a TLS handshake with the env's HBONE listener.
func dialTLS(t *testing.T, e *env, conf *tls.Config) *tls.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: conf}
	c, err := d.DialContext(ctx, "tcp", e.tunnel.String())
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	return c.(*tls.Conn)
}

// handshake runs one client handshake against the env's listener; rewrite,
// if set, edits the ClientHello record before it is sent.
func handshake(t *testing.T, e *env, conf *tls.Config, rewrite func([]byte) []byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", e.tunnel.String())
	if err != nil {
		t.Fatal(err)
	}
	if rewrite != nil {
		nc = &helloRewriter{Conn: nc, rewrite: rewrite}
	}
	tc := tls.Client(nc, conf)
	defer tc.Close()
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	// TLS 1.3: the server may refuse the client's certificate after the
	// client's side is done; a read sees its alert.
	_ = tc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); err != nil && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		return err
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// helloRewriter edits the first record written (the ClientHello).
type helloRewriter struct {
	net.Conn
	rewrite func([]byte) []byte
	done    bool
}

func (h *helloRewriter) Write(p []byte) (int, error) {
	if h.done {
		return h.Conn.Write(p)
	}
	h.done = true
	if _, err := h.Conn.Write(h.rewrite(append([]byte(nil), p...))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// onlyChaCha20 makes a ClientHello record offer TLS_CHACHA20_POLY1305_SHA256
// alone: the first suite becomes ChaCha20 and every other one a GREASE
// value (RFC 8701), which servers ignore. Lengths do not change. (In FIPS
// 140-3 mode crypto/tls does not offer ChaCha20 itself, hence the first
// slot rather than the client's own ChaCha20 entry.)
func onlyChaCha20(rec []byte) []byte {
	// record header 5, handshake header 4, version 2, random 32
	off := 5 + 4 + 2 + 32
	if len(rec) < off+1 || rec[0] != 22 || rec[5] != 1 {
		panic("not a ClientHello record")
	}
	off += 1 + int(rec[off]) // session id
	n := int(binary.BigEndian.Uint16(rec[off:]))
	off += 2
	binary.BigEndian.PutUint16(rec[off:], tls.TLS_CHACHA20_POLY1305_SHA256)
	for i := off + 2; i < off+n; i += 2 {
		binary.BigEndian.PutUint16(rec[i:], 0x0a0a)
	}
	return rec
}

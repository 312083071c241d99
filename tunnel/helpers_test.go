package tunnel

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
	"golang.org/x/net/http2/hpack"

	"github.com/ambit-mesh/ambit/identity/identitytest"
)

func TestMain(m *testing.M) {
	if attack := os.Getenv(attackerEnv); attack != "" {
		os.Exit(runAttacker(attack)) // a re-exec of the test binary as a hostile peer (hostile_proc_test.go)
	}
	goleak.VerifyTestMain(m)
}

var (
	testCA    = identitytest.MustCA("cluster.local")
	foreignCA = identitytest.MustCA("other.example") // used by the TLS tests
	srcID     = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/frontend")
	dstID     = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/backend")
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TUNNEL_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// env is a server endpoint, a client endpoint and an upstream app, all on
// loopback.
type env struct {
	t        testing.TB
	loop     netip.Addr
	srvSVIDs *identitytest.Source
	cliSVIDs *identitytest.Source
	bundles  *x509bundle.Set
	srv      *Server
	cli      *Client
	tunnel   netip.AddrPort // HBONE listener
	app      netip.AddrPort // upstream app listener
	appLn    net.Listener
	upDials  atomic.Int32 // server dials to the app
	tunDials atomic.Int32 // client dials of tunnels
	ended    chan *ConnInfo
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type envOpt struct {
	authz    Authorizer
	settings Settings
	idle     time.Duration
	app      func(net.Conn) // upstream behaviour; default echo with half-close
	srvDial  func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	v6       bool
	logger   *slog.Logger // server logger; default testLogger
	hooks    Hooks        // client hooks
	guard    *Guard       // server guard; default the server's own
	reserved []uint16     // server ReservedPorts
	refuse   func(RefuseInfo)
	srvStart func(*ConnInfo) // server OnStart
}

func newEnv(t testing.TB, o envOpt) *env {
	t.Helper()
	e := &env{t: t, ended: make(chan *ConnInfo, 1024), loop: netip.MustParseAddr("127.0.0.1")}
	if o.v6 {
		e.loop = netip.MustParseAddr("::1")
	}
	e.srvSVIDs = identitytest.NewSource(testCA)
	e.cliSVIDs = identitytest.NewSource(testCA)
	e.bundles = x509bundle.NewSet(testCA.Bundle())
	if o.authz == nil {
		o.authz = AllowAll()
	}
	if o.app == nil {
		o.app = echoApp
	}
	if o.logger == nil {
		o.logger = testLogger(t)
	}
	appLn, err := net.Listen("tcp", netip.AddrPortFrom(e.loop, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	e.appLn = appLn
	e.app = appLn.Addr().(*net.TCPAddr).AddrPort()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		var cw sync.WaitGroup
		defer cw.Wait()
		for {
			c, err := appLn.Accept()
			if err != nil {
				return
			}
			cw.Add(1)
			go func() { defer cw.Done(); o.app(c) }()
		}
	}()
	dial := o.srvDial
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", dst.String())
		}
	}
	e.srv, err = NewServer(ServerConfig{
		SVIDs: e.srvSVIDs, Bundles: e.bundles, Authorizer: o.authz, Logger: o.logger, Settings: o.settings,
		Guard: o.guard, ReservedPorts: o.reserved,
		Dial: func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			e.upDials.Add(1)
			return dial(ctx, dst)
		},
		Hooks: Hooks{OnRefuse: o.refuse, OnStart: o.srvStart, OnEnd: func(ci *ConnInfo) {
			c := *ci
			select {
			case e.ended <- &c:
			default:
			}
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(e.loop, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	e.tunnel = ln.Addr().(*net.TCPAddr).AddrPort()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		_ = e.srv.Serve(ctx, ln, Workload{ID: dstID, Addrs: []netip.Addr{e.loop}})
	}()
	e.cli, err = NewClient(ClientConfig{
		SVIDs: e.cliSVIDs, Bundles: e.bundles, Logger: testLogger(t), Settings: o.settings, IdleTimeout: o.idle, Hooks: o.hooks,
		Dial: func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			e.tunDials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", dst.String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

func (e *env) close() {
	_ = e.cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx)
	e.cancel()
	_ = e.appLn.Close()
	e.wg.Wait()
}

func (e *env) req() DialRequest {
	return DialRequest{Source: srcID, Destination: e.app, Tunnel: e.tunnel, Expected: []spiffeid.ID{dstID}}
}

func (e *env) dial(t testing.TB) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.cli.Dial(ctx, e.req())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return c.(*Stream)
}

// echoApp echoes until EOF, then half-closes.
func echoApp(c net.Conn) {
	defer c.Close()
	_, _ = io.Copy(c, c)
	_ = c.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, c)
}

func hpackField(name, value string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: value}
}

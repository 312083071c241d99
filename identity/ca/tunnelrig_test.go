package ca_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/identity/ca/catest"
	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/tunnel"
)

// liveCA is the built-in CA over real HTTPS on 127.0.0.1, on the wall
// clock, with a TTL short enough that a test sees real renewals (catest.Env
// keeps the issuer's default five-minute back-dating, which would stretch a
// few-second TTL to minutes). Its Authenticator and PodLocator are the catest
// fakes: these tests are about what the certificates carry, not who may
// obtain them (server_test.go and e2e/ca_test.go cover that).
type liveCA struct {
	root   *identitytest.CA
	inter  *identitytest.Intermediate
	client *ca.Client

	handler http.Handler
	tlsConf *tls.Config
	addr    string
	mu      sync.Mutex
	srv     *http.Server
}

func startLiveCA(t *testing.T, ttl time.Duration, ids ...spiffeid.ID) *liveCA {
	t.Helper()
	root, err := identitytest.NewCA(td)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate()
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.NewIssuer(ca.IssuerConfig{Chain: []*x509.Certificate{inter.Cert, root.Cert}, Key: inter.Key,
		TTL: ttl, Backdate: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	auth := &catest.Authenticator{}
	auth.Set(catest.NodeAToken, ca.Caller{Namespace: catest.NodeNamespace, ServiceAccount: catest.NodeServiceAccount, Node: "node-a"})
	pods := &catest.Pods{}
	for _, id := range ids {
		ns, sa, err := identity.ParseWorkload(id)
		if err != nil {
			t.Fatal(err)
		}
		pods.Add("node-a", ns, sa)
	}
	server, err := ca.NewServer(ca.Config{TrustDomain: td, Issuer: is, Authenticator: auth, Pods: pods,
		NodeNamespace: catest.NodeNamespace, NodeServiceAccount: catest.NodeServiceAccount, TokenAudiences: []string{catest.Audience},
		RatePerNode: 1000, BurstPerNode: 1000, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	serverID, err := identity.Workload(td, catest.NodeNamespace, "ambit-ca")
	if err != nil {
		t.Fatal(err)
	}
	c := &liveCA{root: root, inter: inter, handler: server.Handler(), tlsConf: ca.ServingTLS(is, serverID, nil, time.Hour, nil)}
	if err := c.serve("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(catest.NodeAToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The client verifies the CA's serving certificate against this CA's
	// own root, independently of the trust bundle a test rotates.
	caTrust, err := identity.NewBundleStore(identity.BundleConfig{TrustDomain: td, Roots: []*x509.Certificate{root.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	c.client, err = ca.NewClient(ca.ClientConfig{URL: "https://" + c.addr, TokenFile: tokenFile, Bundle: caTrust, ServerID: serverID})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.client.Close()
		_ = c.stop()
	})
	return c
}

func (c *liveCA) serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addr = ln.Addr().String()
	c.srv = &http.Server{Handler: c.handler, TLSConfig: c.tlsConf, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug)}
	srv := c.srv
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	return nil
}

// stop takes the CA down: new connections are refused, and the client's
// kept-alive connections are dropped so that nothing reaches it any more.
func (c *liveCA) stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.srv.Close()
	c.client.Close()
	return err
}

// restart brings the CA back on the same address.
func (c *liveCA) restart() error { return c.serve(c.addr) }

// switchSigner is the CA endpoint a node is configured with, switched from
// one CA (intermediate under the old root) to another (under the new root)
// during a root rotation.
type switchSigner struct{ cur atomic.Pointer[ca.Client] }

func (s *switchSigner) set(c *ca.Client) { s.cur.Store(c) }

func (s *switchSigner) Sign(ctx context.Context, csr []byte, id spiffeid.ID) ([]*x509.Certificate, error) {
	return s.cur.Load().Sign(ctx, csr, id)
}

// tunnelRig is an echo application behind a tunnel.Server presenting dst,
// accepting only src, on 127.0.0.1.
type tunnelRig struct {
	srv      *tunnel.Server
	bundle   x509bundle.Source
	src, dst spiffeid.ID
	app      netip.AddrPort
	hbone    netip.AddrPort
}

func newTunnelRig(t *testing.T, svids identity.SVIDSource, bundle x509bundle.Source, src, dst spiffeid.ID) *tunnelRig {
	t.Helper()
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hboneLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := appLn.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		SVIDs: svids, Bundles: bundle,
		Authorizer: tunnel.AuthorizerFunc(func(_ context.Context, r tunnel.AuthzRequest) tunnel.Decision {
			if r.Source != src {
				return tunnel.Decision{Reason: "unexpected source " + r.Source.String()}
			}
			return tunnel.Decision{Allow: true}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(ctx, hboneLn, tunnel.Workload{ID: dst, Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	}()
	t.Cleanup(func() {
		cancel()
		_ = appLn.Close()
		wg.Wait()
	})
	return &tunnelRig{srv: srv, bundle: bundle, src: src, dst: dst,
		app: appLn.Addr().(*net.TCPAddr).AddrPort(), hbone: hboneLn.Addr().(*net.TCPAddr).AddrPort()}
}

var probeSeq atomic.Int64

// roundTrip opens a new tunnel connection (a fresh client, so a fresh TLS
// handshake in which both ends ask their sources for certificates), sends a
// message through it, half-closes, and checks the echo. It returns the
// certificate the server presented.
func (r *tunnelRig) roundTrip(ctx context.Context, svids identity.SVIDSource) (*x509.Certificate, error) {
	cl, err := tunnel.NewClient(tunnel.ClientConfig{SVIDs: svids, Bundles: r.bundle})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := cl.Dial(ctx, tunnel.DialRequest{Source: r.src, Destination: r.app, Tunnel: r.hbone, Expected: []spiffeid.ID{r.dst}})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	s := conn.(*tunnel.Stream)
	leaf := s.ConnectionState().PeerCertificates[0]
	if err := echo(s, fmt.Sprintf("probe-%d", probeSeq.Add(1))); err != nil {
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		return nil, err
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("after half-close: %v, want EOF", err)
	}
	return leaf, nil
}

// echo writes msg to c and expects it back.
func echo(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

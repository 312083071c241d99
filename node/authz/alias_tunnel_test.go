package authz_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/tunnel"
)

// Real tier: a real HBONE tunnel over real TLS 1.3 on loopback, the
// server's bundle and policy engine configured as the daemon configures
// them (node/agent), and the engine asked the way node/dataplane asks it.
// The client workload's certificate comes from the alias trust domain
// old.local, issued by that domain's own root (the bundle file holds both
// roots); the destination's ALLOW names the main domain's principal.

var (
	mainCA    = identitytest.MustCA("cluster.local")
	oldCA     = identitytest.MustCA("old.local")
	aliasWeb  = spiffeid.RequireFromString("spiffe://old.local/ns/shop/sa/web")
	mainWeb   = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")
	backendID = spiffeid.RequireFromString("spiffe://cluster.local/ns/pay/sa/backend")
)

type aliasSetup struct {
	bundleAliases, policyAliases bool
}

// aliasEnv is one destination workload (pay/backend behind an echo app)
// and a client that can present either identity.
type aliasEnv struct {
	cli     *tunnel.Client
	tunnel  netip.AddrPort
	app     netip.AddrPort
	decided chan authz.Decision
}

func newAliasEnv(t *testing.T, s aliasSetup) *aliasEnv {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	var aliases []spiffeid.TrustDomain
	if s.bundleAliases {
		aliases = []spiffeid.TrustDomain{oldCA.TrustDomain}
	}
	bundles, err := identity.NewBundleStore(identity.BundleConfig{TrustDomain: mainCA.TrustDomain,
		Roots: []*x509.Certificate{mainCA.Cert, oldCA.Cert}, Aliases: aliases})
	if err != nil {
		t.Fatal(err)
	}
	opts := authz.Options{RootNamespace: "ambit-system", TrustDomain: "cluster.local", Logger: log}
	if s.policyAliases {
		opts.TrustDomainAliases = []string{"old.local"}
	}
	engine, err := authz.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	engine.Update([]*v1alpha1.AuthorizationPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "pay", Name: "allow-web"},
		Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionAllow, Rules: []v1alpha1.Rule{{
			From: []v1alpha1.RuleFrom{{Source: &v1alpha1.Source{Principals: []string{"cluster.local/ns/shop/sa/web"}}}},
		}}},
	}}, nil)

	e := &aliasEnv{decided: make(chan authz.Decision, 16)}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.app = appLn.Addr().(*net.TCPAddr).AddrPort()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := appLn.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		SVIDs: identitytest.NewSource(mainCA), Bundles: bundles, Logger: log,
		Authorizer: tunnel.AuthorizerFunc(func(_ context.Context, r tunnel.AuthzRequest) tunnel.Decision {
			d := engine.Decide(authz.Request{
				Workload:    authz.Workload{Namespace: "pay", Name: "backend-0", Labels: map[string]string{"app": "backend"}},
				Source:      authz.Source{Principal: r.Source, IP: r.SourceAddr.Addr().Unmap()},
				Destination: authz.Destination{IP: r.Destination.Addr(), Port: r.Destination.Port()},
				Secure:      !r.Source.IsZero(),
			})
			e.decided <- d
			return tunnel.Decision{Allow: d.Allow, Reason: d.Reason, Policy: d.Policy}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.tunnel = ln.Addr().(*net.TCPAddr).AddrPort()
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(ctx, ln, tunnel.Workload{ID: backendID, Addrs: []netip.Addr{e.app.Addr()}})
	}()
	// The client workloads: web in the alias domain (old root) and in the
	// main one.
	svids := identitytest.NewSource(nil)
	svids.Set(aliasWeb, oldCA.MustMint(aliasWeb))
	svids.Set(mainWeb, mainCA.MustMint(mainWeb))
	e.cli, err = tunnel.NewClient(tunnel.ClientConfig{SVIDs: svids, Bundles: bundles, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.cli.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		cancel()
		_ = appLn.Close()
		wg.Wait()
	})
	return e
}

// echo dials through the tunnel as src and checks the bytes come back.
func (e *aliasEnv) echo(t *testing.T, src spiffeid.ID) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.cli.Dial(ctx, tunnel.DialRequest{Source: src, Destination: e.app, Tunnel: e.tunnel, Expected: []spiffeid.ID{backendID}})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		t.Fatalf("echo %q", buf)
	}
	return nil
}

func TestAliasPeerOverRealTunnel(t *testing.T) {
	t.Run("alias configured: allowed by the ALLOW naming the main domain", func(t *testing.T) {
		e := newAliasEnv(t, aliasSetup{bundleAliases: true, policyAliases: true})
		if err := e.echo(t, aliasWeb); err != nil {
			t.Fatalf("alias peer: %v", err)
		}
		if d := <-e.decided; !d.Allow || d.Policy != "pay/allow-web" {
			t.Fatalf("decision %v", d)
		}
		if err := e.echo(t, mainWeb); err != nil {
			t.Fatalf("main-domain peer: %v", err)
		}
	})
	t.Run("alias trusted but not in the policy set: denied by the policy", func(t *testing.T) {
		e := newAliasEnv(t, aliasSetup{bundleAliases: true})
		if err := e.echo(t, aliasWeb); !errors.Is(err, tunnel.ErrDenied) {
			t.Fatalf("alias peer: %v, want ErrDenied", err)
		}
		if d := <-e.decided; d.Allow || d.Reason != authz.ReasonNoAllowMatch {
			t.Fatalf("decision %v", d)
		}
		if err := e.echo(t, mainWeb); err != nil {
			t.Fatalf("main-domain peer: %v", err)
		}
	})
	t.Run("no alias: refused in the TLS handshake", func(t *testing.T) {
		e := newAliasEnv(t, aliasSetup{})
		if err := e.echo(t, aliasWeb); !errors.Is(err, tunnel.ErrTLS) {
			t.Fatalf("alias peer: %v, want ErrTLS", err)
		}
		select {
		case d := <-e.decided:
			t.Fatalf("a peer the bundle refuses reached the policy: %v", d)
		default:
		}
		if err := e.echo(t, mainWeb); err != nil {
			t.Fatalf("main-domain peer: %v", err)
		}
	})
}

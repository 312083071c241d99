package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"sigs.k8s.io/yaml"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca/catest"
	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/tunnel"
)

// PolicyYAML is the AuthorizationPolicy the local demo enforces.
const PolicyYAML = `apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: checkout-from-frontend
  namespace: shop
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/frontend"]
    to:
    - operation:
        ports: ["8080"]
`

// Outcome is what the local demo observed; tests assert on it.
type Outcome struct {
	Reply          string      // what the app answered the allowed client
	ServerSawPeer  spiffeid.ID // client identity the HBONE server verified
	ClientSawPeer  spiffeid.ID // server identity the HBONE client verified
	DeniedErr      error       // the denied client's error (wraps tunnel.ErrDenied)
	CARefusedErr   error       // the CA's refusal for an identity with no pod here
	Certificates   []identity.CertInfo
	AccessLogLines []string
}

// Local runs the local demo, narrating to w. dir holds the CA's token file.
func Local(ctx context.Context, w io.Writer, dir string) (*Outcome, error) {
	say := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	out := &Outcome{}
	logger := slog.New(slog.DiscardHandler)

	say("== 1. A certificate authority ==")
	env, err := catest.Start(catest.Options{Dir: dir, TTL: time.Hour})
	if err != nil {
		return nil, fmt.Errorf("start CA: %w", err)
	}
	defer env.Close()
	say("ambit's built-in CA serves CSRs on %s (signing with an intermediate under a throw-away root;", env.URL)
	say("in a cluster: `ambit ca -signing-cert tls.crt -signing-key tls.key`, your PKI's intermediate).")
	say("It signs an identity for a node only if a pod of that identity runs on that node.")

	td := env.Root.TrustDomain
	frontend, _ := identity.Workload(td, "shop", "frontend")
	checkout, _ := identity.Workload(td, "shop", "checkout")
	reporting, _ := identity.Workload(td, "shop", "reporting")
	admin, _ := identity.Workload(td, "shop", "admin")
	for _, sa := range []string{"frontend", "checkout", "reporting"} {
		env.Pods.Add("node-a", "shop", sa)
	}

	say("\n== 2. The node daemon obtains certificates for the pods on its node (node-a) ==")
	client, err := env.Client()
	if err != nil {
		return nil, err
	}
	mgr, err := identity.NewManager(identity.ManagerConfig{
		Provider: identity.CSRProvider{Signer: client},
		Bundle:   env.Bundle,
		Logger:   logger,
	})
	if err != nil {
		return nil, err
	}
	defer mgr.Close()
	for _, id := range []spiffeid.ID{frontend, checkout, reporting} {
		if err := mgr.Prefetch(ctx, id); err != nil {
			return nil, fmt.Errorf("prefetch %s: %w", id, err)
		}
	}
	out.Certificates = mgr.Snapshot()
	for _, c := range out.Certificates {
		say("  %-45s serial %.16s...  valid until %s  (key generated on the node, never sent)",
			c.ID, c.Serial, c.NotAfter.UTC().Format(time.TimeOnly))
	}
	pctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	out.CARefusedErr = mgr.Prefetch(pctx, admin)
	cancel()
	if out.CARefusedErr == nil {
		return nil, errors.New("the CA signed an identity with no pod on this node")
	}
	say("  %-45s refused: %v", admin, out.CARefusedErr)
	mgr.Forget(admin)

	say("\n== 3. The app and its policy ==")
	app, err := startApp()
	if err != nil {
		return nil, err
	}
	defer app.Close()
	appAddr := netip.MustParseAddrPort(app.Addr().String())
	say("checkout's app listens on %s, plaintext and unchanged. Policy:\n", appAddr)
	for _, l := range strings.Split(strings.TrimSpace(PolicyYAML), "\n") {
		say("    %s", l)
	}
	var ap v1alpha1.AuthorizationPolicy
	if err := yaml.UnmarshalStrict([]byte(PolicyYAML), &ap); err != nil {
		return nil, err
	}
	engine, err := authz.New(authz.Options{RootNamespace: "ambit-system", Logger: logger})
	if err != nil {
		return nil, err
	}
	engine.Update([]*v1alpha1.AuthorizationPolicy{&ap}, nil)

	say("\n== 4. Two HBONE endpoints ==")
	var (
		mu    sync.Mutex
		lines []string
	)
	hooks := tunnel.Hooks{OnEnd: func(ci *tunnel.ConnInfo) {
		line := accessLine(ci)
		mu.Lock()
		lines = append(lines, line)
		if ci.Direction == tunnel.Inbound && ci.Outcome == tunnel.OutcomeOK {
			out.ServerSawPeer = ci.Source
		}
		if ci.Direction == tunnel.Outbound && ci.Outcome == tunnel.OutcomeOK {
			out.ClientSawPeer = ci.Destination
		}
		mu.Unlock()
	}}
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		SVIDs:      mgr,
		Bundles:    env.Bundle,
		Authorizer: policyAuthorizer(engine),
		Logger:     logger,
		Hooks:      hooks,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() {
		served <- srv.Serve(sctx, ln, tunnel.Workload{ID: checkout, Addrs: []netip.Addr{appAddr.Addr()}})
	}()
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(dctx)
		<-served
	}()
	tcl, err := tunnel.NewClient(tunnel.ClientConfig{SVIDs: mgr, Bundles: env.Bundle, Logger: logger, Hooks: hooks})
	if err != nil {
		return nil, err
	}
	defer tcl.Close()
	tunAddr := netip.MustParseAddrPort(ln.Addr().String())
	say("server endpoint for %s on %s (mTLS 1.3, ALPN h2, HTTP/2 CONNECT)", checkout, tunAddr)

	say("\n== 5. frontend -> checkout: allowed ==")
	say("client endpoint: CONNECT %s as %s, expecting %s", appAddr, frontend, checkout)
	out.Reply, err = exchange(ctx, tcl, tunnel.DialRequest{Source: frontend, Destination: appAddr, Tunnel: tunAddr, Expected: []spiffeid.ID{checkout}}, "order #42")
	if err != nil {
		return nil, fmt.Errorf("allowed connection: %w", err)
	}
	say("app answered: %q", out.Reply)

	say("\n== 6. reporting -> checkout: denied by the policy ==")
	_, out.DeniedErr = exchange(ctx, tcl, tunnel.DialRequest{Source: reporting, Destination: appAddr, Tunnel: tunAddr, Expected: []spiffeid.ID{checkout}}, "give me everything")
	if out.DeniedErr == nil {
		return nil, errors.New("the policy did not deny sa/reporting")
	}
	say("client endpoint got: %v", out.DeniedErr)

	waitFor(func() bool { mu.Lock(); defer mu.Unlock(); return len(lines) >= 4 }, 5*time.Second)
	say("\n== 7. The access log of both endpoints (one line per connection) ==")
	mu.Lock()
	out.AccessLogLines = append([]string(nil), lines...)
	mu.Unlock()
	for _, l := range out.AccessLogLines {
		say("  %s", l)
	}
	return out, nil
}

// policyAuthorizer asks the policy engine on behalf of the tunnel server.
func policyAuthorizer(e *authz.Engine) tunnel.Authorizer {
	return tunnel.AuthorizerFunc(func(_ context.Context, r tunnel.AuthzRequest) tunnel.Decision {
		ns, _, _ := identity.ParseWorkload(r.Workload)
		d := e.Decide(authz.Request{
			Workload:    authz.Workload{Namespace: ns, Name: "checkout", Identity: r.Workload},
			Source:      authz.Source{Principal: r.Source, IP: r.SourceAddr.Addr()},
			Destination: authz.Destination{IP: r.Destination.Addr(), Port: 8080},
			Secure:      !r.Source.IsZero(),
		})
		return tunnel.Decision{Allow: d.Allow, Reason: d.Reason, Policy: d.Policy}
	})
}

func accessLine(ci *tunnel.ConnInfo) string {
	outcome := ci.Outcome
	if outcome == "" {
		outcome = "OK"
	}
	s := fmt.Sprintf("%-8s src=%s dst=%s dst_addr=%s sent=%dB recv=%dB outcome=%s",
		ci.Direction, ci.Source, ci.Destination, ci.DestAddr, ci.BytesSent, ci.BytesRecv, outcome)
	if ci.Policy != "" || ci.Reason != "" {
		s += fmt.Sprintf(" policy=%q reason=%q", ci.Policy, ci.Reason)
	}
	return s
}

func exchange(ctx context.Context, c *tunnel.Client, r tunnel.DialRequest, msg string) (string, error) {
	conn, err := c.Dial(ctx, r)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if _, err := fmt.Fprintln(conn, msg); err != nil {
		return "", err
	}
	// Half-close (END_STREAM), then read the reply until the app closes
	// (END_STREAM back): a clean end both ways, as TCP FINs would be.
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return "", err
	}
	reply, err := io.ReadAll(conn)
	return strings.TrimSpace(string(reply)), err
}

// startApp runs a line-echo app that knows nothing of ambit.
func startApp() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(c, "checkout got %q from %s\n", strings.TrimSpace(line), c.RemoteAddr())
			}()
		}
	}()
	return ln, nil
}

func waitFor(cond func() bool, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// TempDir makes the directory Local needs and returns a cleanup.
func TempDir() (string, func(), error) {
	d, err := os.MkdirTemp("", "ambit-demo-")
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

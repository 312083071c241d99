package tunnelbench

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/tunnel"
)

// Path is one way for the app to reach the backend.
type Path interface {
	// Name is "direct", "mtls" or "hbone".
	Name() string
	// Dial opens a connection from the app to the backend through the path.
	Dial(ctx context.Context) (net.Conn, error)
	// Close stops the path's endpoints.
	Close()
}

// PathNames lists the paths in report order.
var PathNames = []string{"direct", "mtls", "hbone"}

// env is what every path shares: a backend and a CA with two identities.
type env struct {
	backend        *backend
	ca             *identitytest.CA
	client, server spiffeid.ID
}

func newEnv() (*env, error) {
	b, err := newBackend()
	if err != nil {
		return nil, err
	}
	ca := identitytest.MustCA("cluster.local")
	client, _ := identity.Workload(ca.TrustDomain, "bench", "client")
	server, _ := identity.Workload(ca.TrustDomain, "bench", "server")
	return &env{backend: b, ca: ca, client: client, server: server}, nil
}

func (e *env) newPath(name string) (Path, error) {
	switch name {
	case "direct":
		return directPath{addr: e.backend.addr()}, nil
	case "mtls":
		return newMTLSPath(e)
	case "hbone":
		return newHBONEPath(e)
	}
	return nil, fmt.Errorf("unknown path %q", name)
}

var dialer = net.Dialer{Timeout: 10 * time.Second}

type directPath struct{ addr string }

func (directPath) Name() string { return "direct" }
func (p directPath) Dial(ctx context.Context) (net.Conn, error) {
	return dialer.DialContext(ctx, "tcp", p.addr)
}
func (directPath) Close() {}

// splicePath is a plaintext listener for the app in front of a client
// endpoint, and whatever server endpoint it tunnels to.
type splicePath struct {
	name  string
	front net.Listener
	lns   []net.Listener
	wg    sync.WaitGroup
	stop  func()
}

func (p *splicePath) Name() string { return p.name }
func (p *splicePath) Dial(ctx context.Context) (net.Conn, error) {
	return dialer.DialContext(ctx, "tcp", p.front.Addr().String())
}
func (p *splicePath) Close() {
	p.front.Close()
	for _, ln := range p.lns {
		ln.Close()
	}
	if p.stop != nil {
		p.stop()
	}
	p.wg.Wait()
}

func newMTLSPath(e *env) (Path, error) {
	serverSVID := e.ca.MustMint(e.server)
	clientSVID := e.ca.MustMint(e.client)
	bundle := e.ca.Bundle()

	srvConf := tlsconfig.MTLSServerConfig(serverSVID, bundle, tlsconfig.AuthorizeMemberOf(e.ca.TrustDomain))
	srvConf.MinVersion = tls.VersionTLS13
	srvConf.NextProtos = []string{"h2"}
	srvConf.SessionTicketsDisabled = true
	cliConf := tlsconfig.MTLSClientConfig(clientSVID, bundle, tlsconfig.AuthorizeID(e.server))
	cliConf.MinVersion = tls.VersionTLS13
	cliConf.NextProtos = []string{"h2"}

	tlsLn, err := tls.Listen("tcp", "127.0.0.1:0", srvConf)
	if err != nil {
		return nil, err
	}
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tlsLn.Close()
		return nil, err
	}
	p := &splicePath{name: "mtls", front: front, lns: []net.Listener{tlsLn}}
	backendAddr := e.backend.addr()
	serverAddr := tlsLn.Addr().String()
	p.wg.Add(2)
	go acceptLoop(tlsLn, &p.wg, func(in net.Conn) {
		if err := in.(*tls.Conn).HandshakeContext(context.Background()); err != nil {
			in.Close()
			return
		}
		out, err := dialer.Dial("tcp", backendAddr)
		if err != nil {
			in.Close()
			return
		}
		splice(in, out)
	})
	go acceptLoop(front, &p.wg, func(in net.Conn) {
		out, err := (&tls.Dialer{NetDialer: &dialer, Config: cliConf}).Dial("tcp", serverAddr)
		if err != nil {
			in.Close()
			return
		}
		splice(in, out)
	})
	return p, nil
}

func newHBONEPath(e *env) (Path, error) {
	svids := identitytest.NewSource(e.ca)
	bundle := e.ca.Bundle()
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		SVIDs:      svids,
		Bundles:    bundle,
		Authorizer: tunnel.AllowAll(),
		// Every connection comes from one source identity: the per-identity
		// stream cap (2,048 by default) would refuse the idle workload's
		// 3,000 connections, which measure memory, not the cap.
		Guard: tunnel.NewGuard(tunnel.GuardConfig{MaxStreamsPerIdentity: 1 << 20}),
	})
	if err != nil {
		return nil, err
	}
	cli, err := tunnel.NewClient(tunnel.ClientConfig{SVIDs: svids, Bundles: bundle})
	if err != nil {
		return nil, err
	}
	hboneLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		hboneLn.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &splicePath{name: "hbone", front: front, lns: []net.Listener{hboneLn}}
	loop := netip.MustParseAddr("127.0.0.1")
	p.stop = func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		_ = cli.Close()
	}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		_ = srv.Serve(ctx, hboneLn, tunnel.Workload{ID: e.server, Addrs: []netip.Addr{loop}})
	}()
	dst := netip.MustParseAddrPort(e.backend.addr())
	tun := netip.MustParseAddrPort(hboneLn.Addr().String())
	go acceptLoop(front, &p.wg, func(in net.Conn) {
		src, _ := netip.ParseAddrPort(in.RemoteAddr().String())
		out, err := cli.Dial(ctx, tunnel.DialRequest{
			Source:      e.client,
			SourceAddr:  src,
			Destination: dst,
			Tunnel:      tun,
			Expected:    []spiffeid.ID{e.server},
		})
		if err != nil {
			in.Close()
			return
		}
		// The daemon's own splice (pooled, idle-frugal buffers), as the
		// node's outbound listener uses it.
		_, _, _ = tunnel.Splice(ctx, in, out, tunnel.Settings{})
	})
	return p, nil
}

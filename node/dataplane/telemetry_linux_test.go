package dataplane

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/tunnel"
)

type routerFunc func(dst netip.AddrPort, src netip.Addr) tables.Route

func (f routerFunc) Resolve(dst netip.AddrPort, src netip.Addr) tables.Route { return f(dst, src) }

// TestTelemetryFacts runs the real capture and tunnel between lab pods and
// checks what the hooks are told: a connection to a Service VIP carries
// the Service's hostname to both ends (the forwarded host), the outbound
// source is the pod's address with the app's own port (not port 0), and a
// plaintext passthrough reports its bytes while it is open.
func TestTelemetryFacts(t *testing.T) {
	l := newLab(t)
	a, b, c := l.pod("tm-a", 2), l.pod("tm-b", 3), l.pod("tm-c", 4)
	const appPort = 8080
	serveApp(t, b.listen(appPort))
	// C's app echoes and, at the client's FIN, keeps its side open until
	// the test ends: the daemon's socket then sits in CLOSE_WAIT.
	hold := make(chan struct{})
	cln := c.listen(appPort)
	go func() {
		for {
			conn, err := cln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
				<-hold
			}()
		}
	}()
	var release sync.Once
	defer release.Do(func() { close(hold) })

	m := testManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, p := range []*labPod{a, b} {
		if err := m.Apply(ctx, p.netns(), redirect.Config{}); err != nil {
			t.Fatalf("apply %s: %v", p.name, err)
		}
	}
	ca := identitytest.MustCA("cluster.local")
	idA := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/client")
	idB := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/server")
	vip := netip.MustParseAddrPort("10.96.7.7:80")
	router := routerFunc(func(dst netip.AddrPort, _ netip.Addr) tables.Route {
		switch dst {
		case vip:
			return tables.Route{Kind: tables.HBONE, Endpoint: netip.AddrPortFrom(b.ip, appPort),
				Tunnel: netip.AddrPortFrom(b.ip, tunnel.HBONEPort), Identity: idB,
				Service: tables.Ref{Namespace: "demo", Name: "web"}, Reason: tables.ReasonEnrolled}
		case netip.AddrPortFrom(c.ip, appPort):
			return tables.Route{Kind: tables.Passthrough, Endpoint: dst, Reason: tables.ReasonNotEnrolled}
		}
		return tables.Route{Kind: tables.Deny, Reason: "test: no route"}
	})
	engine, err := authz.New(authz.Options{RootNamespace: "ambit-system"})
	if err != nil {
		t.Fatal(err)
	}
	hooksA, hooksB := newHookLog(), newHookLog()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, s := range []struct {
		p  *labPod
		id spiffeid.ID
		h  *hookLog
	}{{a, idA, hooksA}, {b, idB, hooksB}} {
		dp, err := Start(ctx, Config{
			PodID: s.p.name, Identity: s.id, Addrs: []netip.Addr{s.p.ip},
			Workload: authz.Workload{Namespace: "demo", Name: s.p.name, Identity: s.id},
			Capture:  m, Router: router, Authorizer: engine,
			SVIDs: identitytest.NewSource(ca), Bundles: ca.Bundle(), Hooks: s.h.hooks(), Logger: logger,
		})
		if err != nil {
			t.Fatalf("start %s: %v", s.p.name, err)
		}
		t.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			_ = dp.Stop(sctx)
		})
	}

	// 1. Through the Service VIP.
	conn, err := a.dial(ctx, vip)
	if err != nil {
		t.Fatalf("dial %v: %v", vip, err)
	}
	if err := roundTrip(conn, "to the service"); err != nil {
		t.Fatalf("round trip through %v: %v", vip, err)
	}
	appPortA := conn.LocalAddr().(*net.TCPAddr).AddrPort().Port()
	conn.Close()
	const host = "web.demo.svc.cluster.local"
	cli := hooksA.nextEnd(t, tunnel.Outbound)
	if cli.Forwarded.Host != host {
		t.Errorf("client hook: forwarded host %q, want %q", cli.Forwarded.Host, host)
	}
	if want := netip.AddrPortFrom(a.ip, appPortA); cli.SourceAddr != want {
		t.Errorf("client hook: source %v, want the pod's address with the app's port %v", cli.SourceAddr, want)
	}
	if srv := hooksB.nextEnd(t, tunnel.Inbound); srv.Forwarded.Host != host {
		t.Errorf("server hook: forwarded host %q, want %q", srv.Forwarded.Host, host)
	}

	// 2. Passthrough to an unenrolled pod: bytes while open.
	pconn, err := a.dial(ctx, netip.AddrPortFrom(c.ip, appPort))
	if err != nil {
		t.Fatal(err)
	}
	defer pconn.Close()
	msg := strings.Repeat("p", 3000)
	if err := roundTrip(pconn, msg); err != nil {
		t.Fatalf("passthrough round trip: %v", err)
	}
	var live func() (int64, int64)
	for _, s := range hooksA.starts() {
		if s.Destination.IsZero() && s.Direction == tunnel.Outbound {
			live = s.Live
		}
	}
	if live == nil {
		t.Fatal("passthrough OnStart without ConnInfo.Live")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		to, from := live()
		if to == 3000 && from == 3000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live bytes %d/%d, want 3000/3000 while open", to, from)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A half-close (FIN) is not counted as a byte.
	_ = pconn.(*net.TCPConn).CloseWrite()
	time.Sleep(100 * time.Millisecond)
	if to, from := live(); to != 3000 || from != 3000 {
		t.Errorf("live bytes after FIN %d/%d, want 3000/3000", to, from)
	}
	pconn.Close()
	release.Do(func() { close(hold) })
	end := hooksA.nextEnd(t, tunnel.Outbound)
	if end.BytesSent != 3000 || end.BytesRecv != 3000 {
		t.Errorf("passthrough end bytes %d/%d, want 3000", end.BytesSent, end.BytesRecv)
	}
	if to, from := live(); to > end.BytesSent || from > end.BytesRecv {
		t.Errorf("live bytes after the end %d/%d exceed the totals", to, from)
	}
}

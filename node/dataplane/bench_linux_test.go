package dataplane

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/tunnel"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// BenchmarkPodToPod compares an app's connection between two enrolled pods
// (capture, 15001, HBONE, 15008, authorization, marked dial to the app)
// with plain TCP between two pods outside the mesh on the same bridge:
// a 1 KiB echo on one connection (rtt) and a new connection with a 1-byte
// echo (connect).
//
//	go test -run '^$' -bench PodToPod ./node/dataplane
func BenchmarkPodToPod(b *testing.B) {
	l := newLab(b)
	pa, pb, pc, pd := l.pod("bn-a", 2), l.pod("bn-b", 3), l.pod("bn-c", 4), l.pod("bn-d", 5)
	serveApp(b, pb.listen(8080))
	serveApp(b, pd.listen(8080))
	m := testManager(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ca := identitytest.MustCA("cluster.local")
	svids := identitytest.NewSource(ca)
	engine, err := authz.New(authz.Options{RootNamespace: "ambit-system"})
	if err != nil {
		b.Fatal(err)
	}
	idB := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/server")
	router := staticRouter{pb.ip: {Kind: tables.HBONE, Tunnel: netip.AddrPortFrom(pb.ip, tunnel.HBONEPort), Identity: idB}}
	for i, p := range []*labPod{pa, pb} {
		if err := m.Apply(ctx, p.netns(), redirect.Config{}); err != nil {
			b.Fatal(err)
		}
		id := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/client")
		if i == 1 {
			id = idB
		}
		dp, err := Start(ctx, Config{PodID: p.name, Identity: id, Addrs: []netip.Addr{p.ip},
			Workload: authz.Workload{Namespace: "demo", Name: p.name}, Capture: m, Router: router,
			Authorizer: engine, SVIDs: svids, Bundles: ca.Bundle(),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			dp.Stop(sctx)
		})
	}
	paths := []struct {
		name string
		from *labPod
		to   netip.AddrPort
	}{
		{"mesh", pa, netip.AddrPortFrom(pb.ip, 8080)},
		{"direct", pc, netip.AddrPortFrom(pd.ip, 8080)},
	}
	for _, p := range paths {
		b.Run(p.name+"/rtt-1KiB", func(b *testing.B) {
			c, err := p.from.dial(ctx, p.to)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 1024)
			buf := make([]byte, 1024)
			b.SetBytes(1024)
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(p.name+"/connect", func(b *testing.B) {
			for b.Loop() {
				c, err := p.from.dial(ctx, p.to)
				if err != nil {
					b.Fatal(err)
				}
				if err := roundTrip(c, "x"); err != nil {
					b.Fatal(err)
				}
				closeRST(c)
			}
		})
	}
}

// closeRST closes without TIME_WAIT, so thousands of iterations do not
// exhaust the ephemeral ports of one source address.
func closeRST(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

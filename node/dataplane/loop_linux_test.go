package dataplane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/tunnel"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestNoLoopThroughCapture: from inside a captured pod, a connection to a
// daemon port (15001, 15006, 15008, or the admin and metrics ports given
// as ReservedPorts) on a mesh pod's address, its own or another pod's,
// never reaches a daemon listener through the tunnel: the destination's
// HBONE server refuses the CONNECT as a loop (400, counted) and nothing
// is established, so no HBONE connection nests inside another; an app
// port still works. With the same-node shortcut (the Node's default) the
// shortcut refuses them likewise, its own pod's ports included.
func TestNoLoopThroughCapture(t *testing.T) {
	t.Run("tunnelled", func(t *testing.T) { testNoLoop(t, true) })
	t.Run("shortcut", func(t *testing.T) { testNoLoop(t, false) })
}

func testNoLoop(t *testing.T, tunnelSameNode bool) {
	l := newLab(t)
	a, b := l.pod("lp-a", 2), l.pod("lp-b", 3)
	const appPort = 8080
	app := serveApp(t, b.listen(appPort))

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
	engine, err := authz.New(authz.Options{RootNamespace: "ambit-system"})
	if err != nil {
		t.Fatal(err)
	}
	router := staticRouter{
		a.ip: {Kind: tables.HBONE, Tunnel: netip.AddrPortFrom(a.ip, tunnel.HBONEPort), Identity: idA, Reason: tables.ReasonEnrolled},
		b.ip: {Kind: tables.HBONE, Tunnel: netip.AddrPortFrom(b.ip, tunnel.HBONEPort), Identity: idB, Reason: tables.ReasonEnrolled},
	}
	const adminPort, metricsPort = 15000, 15020
	var mu sync.Mutex
	var established []tunnel.ConnInfo
	loops := map[string]int{}
	hooks := tunnel.Hooks{
		OnStart: func(ci *tunnel.ConnInfo) {
			mu.Lock()
			established = append(established, *ci)
			mu.Unlock()
		},
		OnRefuse: func(ri tunnel.RefuseInfo) {
			mu.Lock()
			loops[ri.Reason]++
			mu.Unlock()
		},
	}
	node, err := NewNode(NodeConfig{Capture: m, Router: router, Authorizer: engine,
		SVIDs: identitytest.NewSource(ca), Bundles: ca.Bundle(), Hooks: hooks,
		Logger:        slog.New(slog.NewTextHandler(logOut(), nil)),
		ReservedPorts: []uint16{adminPort, metricsPort}, TunnelSameNode: tunnelSameNode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := node.Close(sctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	for _, p := range []struct {
		pod *labPod
		id  spiffeid.ID
	}{{a, idA}, {b, idB}} {
		err := node.Set(ctx, PodSpec{PodID: p.pod.name, Identity: p.id, Addrs: []netip.Addr{p.pod.ip},
			Workload: authz.Workload{Namespace: "demo", Name: p.pod.name, Identity: p.id}})
		if err != nil {
			t.Fatalf("set %s: %v", p.pod.name, err)
		}
	}

	// The app port works: the lab is wired.
	c, err := a.dial(ctx, netip.AddrPortFrom(b.ip, appPort))
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(c, "app port"); err != nil {
		t.Fatalf("A -> B app port: %v", err)
	}
	c.Close()
	<-app.seen

	cross, self := 0, 0
	for _, from := range []*labPod{a, b} {
		for _, to := range []*labPod{a, b} {
			// The well-known ports, the admin and metrics ports, and the
			// ephemeral ports the destination's listeners are bound to.
			ports := []uint16{15001, 15006, tunnel.HBONEPort, adminPort, metricsPort}
			ls := node.Pod(to.name).ls
			for _, ln := range []net.Listener{ls.Outbound, ls.Inbound, ls.HBONE} {
				ports = append(ports, addrPortOf(ln.Addr()).Port())
			}
			for _, port := range ports {
				dst := netip.AddrPortFrom(to.ip, port)
				what := fmt.Sprintf("%s -> %v", from.name, dst)
				mu.Lock()
				before := loops[tunnel.RefuseLoop]
				mu.Unlock()
				c, err := from.dial(ctx, dst)
				expectRefused(t, c, err, what)
				if from == to {
					self++
					continue
				}
				cross++
				// The destination's server refuses the CONNECT as a loop.
				waitFor(t, func() bool {
					mu.Lock()
					defer mu.Unlock()
					return loops[tunnel.RefuseLoop] == before+1
				}, what+": CONNECT not refused as a loop")
			}
		}
	}
	expectNothing(t, app, "connections to daemon ports")
	mu.Lock()
	defer mu.Unlock()
	for _, ci := range established {
		if ci.Direction == tunnel.Inbound && ci.DestAddr.Port() != appPort {
			t.Errorf("an HBONE stream to %v was established (%v): a loop", ci.DestAddr, ci.Source)
		}
	}
	if !tunnelSameNode {
		// The shortcut refuses both another pod's and the pod's own daemon
		// ports as loops (reported through OnRefuse), and dials no tunnel.
		if loops[tunnel.RefuseLoop] != cross+self {
			t.Errorf("%d loops refused by the shortcut, want %d", loops[tunnel.RefuseLoop], cross+self)
		}
		for _, id := range []string{a.name, b.name} {
			if cst, _ := node.Pod(id).TunnelStats(); cst.TunnelsDialed != 0 {
				t.Errorf("pod %s dialed %d tunnels, want none", id, cst.TunnelsDialed)
			}
		}
		return
	}
	var refusedLoops int64
	for _, id := range []string{a.name, b.name} {
		_, st := node.Pod(id).TunnelStats()
		refusedLoops += st.Loops
	}
	if refusedLoops != int64(cross) {
		t.Errorf("%d loops refused by the servers, want %d", refusedLoops, cross)
	}
	t.Logf("%d connections from captured pods to daemon ports of another pod: %d refused as loops (400); "+
		"%d to their own pod's: the tunnel dial finds no listener (sk_lookup leaves a pod's own traffic alone); none established",
		cross, refusedLoops, self)
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func logOut() io.Writer {
	if os.Getenv("DP_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

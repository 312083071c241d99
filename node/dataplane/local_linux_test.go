package dataplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/nstest"
	"github.com/ambit-mesh/ambit/tunnel"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// sameNode is two enrolled pods of one Node on the lab bridge, A the client
// and B running an echo app.
type sameNode struct {
	a, b     *labPod
	app      *appServer
	node     *Node
	engine   *authz.Engine
	live     *authz.Live
	hooks    *hookLog
	idA, idB spiffeid.ID
	dst      netip.AddrPort
}

const sameNodeReserved = 15020 // stands for the daemon's metrics port

func newSameNode(t *testing.T, tunnelSameNode bool) *sameNode {
	l := newLab(t)
	s := &sameNode{a: l.pod("sn-a", 2), b: l.pod("sn-b", 3), hooks: newHookLog(), live: authz.NewLive(),
		idA: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/client"),
		idB: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/server")}
	const appPort = 8080
	s.app = serveApp(t, s.b.listen(appPort))
	s.dst = netip.AddrPortFrom(s.b.ip, appPort)
	m := testManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, p := range []*labPod{s.a, s.b} {
		if err := m.Apply(ctx, p.netns(), redirect.Config{}); err != nil {
			t.Fatalf("apply %s: %v", p.name, err)
		}
	}
	ca := identitytest.MustCA("cluster.local")
	var err error
	s.engine, err = authz.New(authz.Options{RootNamespace: "ambit-system"})
	if err != nil {
		t.Fatal(err)
	}
	router := staticRouter{s.b.ip: {Kind: tables.HBONE, Tunnel: netip.AddrPortFrom(s.b.ip, tunnel.HBONEPort), Identity: s.idB,
		Reason: tables.ReasonEnrolled}}
	s.node, err = NewNode(NodeConfig{Capture: m, Router: router, Authorizer: s.engine, SVIDs: identitytest.NewSource(ca),
		Bundles: ca.Bundle(), Live: s.live, Hooks: s.hooks.hooks(), ReservedPorts: []uint16{sameNodeReserved},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), TunnelSameNode: tunnelSameNode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		if err := s.node.Close(cctx); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	for _, x := range []struct {
		p   *labPod
		id  spiffeid.ID
		app string
	}{{s.a, s.idA, "client"}, {s.b, s.idB, "server"}} {
		spec := PodSpec{PodID: x.p.name, Identity: x.id, Addrs: []netip.Addr{x.p.ip},
			Workload: authz.Workload{Namespace: "demo", Name: x.p.name, Labels: map[string]string{"app": x.app}, Identity: x.id}}
		if err := s.node.Set(ctx, spec); err != nil {
			t.Fatalf("set %s: %v", x.p.name, err)
		}
	}
	return s
}

func randomMarker() string {
	var mk [8]byte
	rand.Read(mk[:])
	return "ambit-same-node-marker-" + hex.EncodeToString(mk[:])
}

// TestSameNodeShortcut: a connection between two enrolled pods of one node
// is carried inside the daemon (no TLS, nothing on either pod's veth, no
// tunnel dialed), reported with both identities on both sides, and decided
// by the destination's policy: STRICT admits it (the source identity is
// the daemon's to vouch for), a DENY by the source principal closes a live
// one and refuses new ones, and the daemon's own ports stay refused.
func TestSameNodeShortcut(t *testing.T) {
	s := newSameNode(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	strict := &v1alpha1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "default", UID: "p1", ResourceVersion: "1"},
		Spec:       v1alpha1.PeerAuthenticationSpec{Mtls: &v1alpha1.MutualTLS{Mode: v1alpha1.MTLSStrict}},
	}
	s.engine.Update(nil, []*v1alpha1.PeerAuthentication{strict})

	// 1. Carried under STRICT, without a byte on either pod's veth.
	snA, snB := nstest.Sniff(t, s.a.hostIf), nstest.Sniff(t, s.b.hostIf)
	marker := randomMarker()
	conn, err := s.a.dial(ctx, s.dst)
	if err != nil {
		t.Fatalf("app in A dial %v: %v", s.dst, err)
	}
	if err := roundTrip(conn, marker); err != nil {
		t.Fatalf("round trip A -> B on the same node: %v", err)
	}
	select {
	case from := <-s.app.seen:
		if from.Addr().Unmap() != s.b.ip {
			t.Errorf("app in B saw a connection from %v, want ambit's socket in B (%v)", from, s.b.ip)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("app in B never saw the connection")
	}
	// While open, both reports count the bytes (ConnInfo.Live).
	for _, st := range s.hooks.starts() {
		if st.Live == nil {
			t.Fatalf("%s report without ConnInfo.Live", st.Direction)
		}
		deadline := time.Now().Add(5 * time.Second)
		for to, from := st.Live(); to != int64(len(marker)) || from != int64(len(marker)); to, from = st.Live() {
			if time.Now().After(deadline) {
				t.Fatalf("%s live bytes %d/%d, want %d each way", st.Direction, to, from, len(marker))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	conn.Close()
	srv := s.hooks.nextEnd(t, tunnel.Inbound)
	if srv.Source != s.idA || srv.Destination != s.idB || srv.Outcome != tunnel.OutcomeOK || srv.DestAddr != s.dst ||
		srv.SourceAddr.Addr() != s.a.ip {
		t.Errorf("inbound report: %v (%v) -> %v (%v) outcome %q; want %v (%v) -> %v (%v) ok",
			srv.Source, srv.SourceAddr, srv.Destination, srv.DestAddr, srv.Outcome, s.idA, s.a.ip, s.idB, s.dst)
	}
	if srv.BytesSent != int64(len(marker)) || srv.BytesRecv != int64(len(marker)) {
		t.Errorf("inbound report bytes %d/%d, want %d each way", srv.BytesSent, srv.BytesRecv, len(marker))
	}
	cli := s.hooks.nextEnd(t, tunnel.Outbound)
	if cli.Source != s.idA || cli.Destination != s.idB || cli.Outcome != tunnel.OutcomeOK || cli.BytesSent != int64(len(marker)) {
		t.Errorf("outbound report: %v -> %v outcome %q bytes %d; want %v -> %v ok %d", cli.Source, cli.Destination, cli.Outcome,
			cli.BytesSent, s.idA, s.idB, len(marker))
	}
	if n := len(s.hooks.starts()); n != 2 {
		t.Errorf("%d OnStart reports, want 2 (outbound and inbound)", n)
	}
	for name, sn := range map[string]*nstest.Sniffer{"A": snA, "B": snB} {
		frames := sn.Close()
		ports, sawMarker := tcpPorts(frames, []byte(marker))
		if sawMarker {
			t.Errorf("the app's bytes crossed %s's veth", name)
		}
		if ports[8080]+ports[tunnel.HBONEPort] != 0 {
			t.Errorf("TCP on %s's veth (ports %v): the same-node connection left the pods", name, ports)
		}
	}
	dpA, dpB := s.node.Pod(s.a.name), s.node.Pod(s.b.name)
	if st := dpA.Stats(); st.OutboundLocal != 1 || st.OutboundHBONE != 0 || st.OutboundFailed != 0 {
		t.Errorf("A stats %+v, want 1 same-node, no tunnel, no failure", st)
	}
	if st := dpB.Stats(); st.InboundLocal != 1 {
		t.Errorf("B stats %+v, want 1 same-node inbound", st)
	}
	if cst, _ := dpA.TunnelStats(); cst.TunnelsDialed != 0 {
		t.Errorf("A's tunnel client dialed %d tunnels, want none", cst.TunnelsDialed)
	}

	// 2. The daemon's own port in B is refused as a loop.
	conn, err = s.a.dial(ctx, netip.AddrPortFrom(s.b.ip, sameNodeReserved))
	expectRefused(t, conn, err, "A -> B's reserved port")
	if ci := s.hooks.nextEnd(t, tunnel.Inbound); ci.Outcome != tunnel.OutcomeBadRequest || !errors.Is(ci.Err, tunnel.ErrBadRequest) {
		t.Errorf("loop reported outcome %q err %v, want %q", ci.Outcome, ci.Err, tunnel.OutcomeBadRequest)
	}
	s.hooks.nextEnd(t, tunnel.Outbound)

	// 3. A DENY of A's principal closes the live connection within a
	// second (both ends reset) and refuses the next one.
	live, err := s.a.dial(ctx, s.dst)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := roundTrip(live, "live"); err != nil {
		t.Fatalf("live connection: %v", err)
	}
	<-s.app.seen
	deny := &v1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "deny-client", UID: "u1", ResourceVersion: "1"},
		Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionDeny,
			Rules: []v1alpha1.Rule{{From: []v1alpha1.RuleFrom{{Source: &v1alpha1.Source{
				Principals: []string{"cluster.local/ns/demo/sa/client"}}}}}}},
	}
	changed := time.Now()
	s.engine.Update([]*v1alpha1.AuthorizationPolicy{deny}, []*v1alpha1.PeerAuthentication{strict})
	if n := s.live.Recheck(s.engine); n != 1 {
		t.Errorf("Live.Recheck closed %d connections, want 1", n)
	}
	live.SetReadDeadline(changed.Add(time.Second))
	if n, err := live.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("live connection a second after the DENY: read %d, %v; want a reset", n, err)
	}
	srv = s.hooks.nextEnd(t, tunnel.Inbound)
	if srv.Outcome != tunnel.OutcomeRevoked || srv.Source != s.idA || srv.Policy != "demo/deny-client" ||
		!strings.HasPrefix(srv.Reason, "policy changed: ") || !errors.Is(srv.Err, tunnel.ErrRevoked) {
		t.Errorf("revoked inbound report: outcome %q source %v policy %q reason %q err %v", srv.Outcome, srv.Source, srv.Policy, srv.Reason, srv.Err)
	}
	if cli := s.hooks.nextEnd(t, tunnel.Outbound); cli.Outcome != tunnel.OutcomeReset || cli.Destination != s.idB {
		t.Errorf("revoked outbound report: outcome %q destination %v, want %q to %v", cli.Outcome, cli.Destination, tunnel.OutcomeReset, s.idB)
	}
	conn, err = s.a.dial(ctx, s.dst)
	expectRefused(t, conn, err, "A -> B under DENY")
	expectNothing(t, s.app, "A -> B under DENY")
	if ci := s.hooks.nextEnd(t, tunnel.Inbound); ci.Outcome != tunnel.OutcomeDenied || ci.Policy != "demo/deny-client" || ci.Source != s.idA {
		t.Errorf("denied inbound report: outcome %q policy %q source %v", ci.Outcome, ci.Policy, ci.Source)
	}
	if ci := s.hooks.nextEnd(t, tunnel.Outbound); ci.Outcome != tunnel.OutcomeDenied || !errors.Is(ci.Err, tunnel.ErrDenied) {
		t.Errorf("denied outbound report: outcome %q err %v", ci.Outcome, ci.Err)
	}
	if st := dpB.Stats(); st.InboundLocal != 4 || st.InboundLocalDenied != 1 || st.InboundLocalRevoked != 1 {
		t.Errorf("B stats %+v, want 4 same-node inbound, 1 denied, 1 revoked", st)
	}
}

// TestSameNodeTunnelled: with NodeConfig.TunnelSameNode the same pods talk
// through HBONE (TLS on B's veth to 15008), as before the shortcut.
func TestSameNodeTunnelled(t *testing.T) {
	s := newSameNode(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snB := nstest.Sniff(t, s.b.hostIf)
	marker := randomMarker()
	conn, err := s.a.dial(ctx, s.dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(conn, marker); err != nil {
		t.Fatalf("round trip A -> B through the tunnel: %v", err)
	}
	conn.Close()
	s.hooks.nextEnd(t, tunnel.Inbound)
	ports, sawMarker := tcpPorts(snB.Close(), []byte(marker))
	if sawMarker || ports[tunnel.HBONEPort] == 0 {
		t.Errorf("B's veth: marker seen %v, TCP ports %v; want only HBONE", sawMarker, ports)
	}
	if st := s.node.Pod(s.a.name).Stats(); st.OutboundLocal != 0 || st.OutboundHBONE != 1 {
		t.Errorf("A stats %+v, want the tunnel, not the shortcut", st)
	}
}

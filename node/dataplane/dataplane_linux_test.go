package dataplane

import (
	"github.com/ambit-mesh/ambit/redirect/nstest"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/tunnel"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var _ Capture = (*redirect.Manager)(nil)
var _ Router = (*tables.Tables)(nil)
var _ Authorizer = (*authz.Engine)(nil)

// staticRouter is a hand-written routing table: destination IP -> route.
// Anything else is denied (the zero Route).
type staticRouter map[netip.Addr]tables.Route

func (r staticRouter) Resolve(dst netip.AddrPort, _ netip.Addr) tables.Route {
	rt, ok := r[dst.Addr()]
	if !ok {
		return tables.Route{Kind: tables.Deny, Reason: "test: no route"}
	}
	if rt.Kind != tables.Deny {
		rt.Endpoint = netip.AddrPortFrom(dst.Addr(), dst.Port())
	}
	return rt
}

// hookLog records the ConnInfo of every hook call.
type hookLog struct {
	mu    sync.Mutex
	start []tunnel.ConnInfo
	end   []tunnel.ConnInfo
	ended chan tunnel.ConnInfo
	// unclaimed holds ended connections nextEnd read while waiting for
	// another direction: the two ends of one connection finish in either
	// order. Only the test goroutine touches it.
	unclaimed []tunnel.ConnInfo
}

func newHookLog() *hookLog { return &hookLog{ended: make(chan tunnel.ConnInfo, 32)} }

func (h *hookLog) hooks() tunnel.Hooks {
	return tunnel.Hooks{
		OnStart: func(ci *tunnel.ConnInfo) {
			h.mu.Lock()
			h.start = append(h.start, *ci)
			h.mu.Unlock()
		},
		OnEnd: func(ci *tunnel.ConnInfo) {
			h.mu.Lock()
			h.end = append(h.end, *ci)
			h.mu.Unlock()
			h.ended <- *ci
		},
	}
}

func (h *hookLog) starts() []tunnel.ConnInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]tunnel.ConnInfo(nil), h.start...)
}

// nextEnd waits for a hook OnEnd matching dir.
func (h *hookLog) nextEnd(t *testing.T, dir tunnel.Direction) tunnel.ConnInfo {
	t.Helper()
	for i, ci := range h.unclaimed {
		if ci.Direction == dir {
			h.unclaimed = append(h.unclaimed[:i], h.unclaimed[i+1:]...)
			return ci
		}
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ci := <-h.ended:
			if ci.Direction == dir {
				return ci
			}
			h.unclaimed = append(h.unclaimed, ci)
		case <-timeout:
			t.Fatalf("no %s connection ended", dir)
		}
	}
}

// expectNothing fails if the app accepts a connection within a short wait.
func expectNothing(t *testing.T, app *appServer, what string) {
	t.Helper()
	select {
	case from := <-app.seen:
		t.Errorf("%s: the app accepted a connection from %v", what, from)
	case <-time.After(300 * time.Millisecond):
	}
}

// expectRefused: dialing succeeds or not (capture may accept locally first),
// but no byte makes it through and back.
func expectRefused(t *testing.T, c net.Conn, err error, what string) {
	t.Helper()
	if err != nil {
		return
	}
	defer c.Close()
	if rerr := roundTrip(c, "must not arrive"); rerr == nil {
		t.Errorf("%s: round trip succeeded, want refused", what)
	} else if errors.Is(rerr, io.ErrUnexpectedEOF) || errors.Is(rerr, io.EOF) || errors.Is(rerr, net.ErrClosed) {
		return
	}
}

// TestPodToPod runs the node's data path for two enrolled pods on one
// bridge: app in A -> capture -> A's 15001 -> HBONE (mTLS with both pods'
// identities) -> B's 15008 -> authz -> app in B; then a DENY that closes
// a live HBONE connection and spares a plaintext one, then plaintext from
// an unenrolled netns under STRICT and PERMISSIVE.
func TestPodToPod(t *testing.T) {
	l := newLab(t)
	a, b, c := l.pod("dp-a", 2), l.pod("dp-b", 3), l.pod("dp-c", 4)
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
	svids := identitytest.NewSource(ca)
	engine, err := authz.New(authz.Options{RootNamespace: "ambit-system"})
	if err != nil {
		t.Fatal(err)
	}
	router := staticRouter{
		b.ip: {Kind: tables.HBONE, Tunnel: netip.AddrPortFrom(b.ip, tunnel.HBONEPort), Identity: idB,
			Reason: tables.ReasonEnrolled},
	}
	hooksA, hooksB := newHookLog(), newHookLog()
	live := authz.NewLive()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(p *labPod, id spiffeid.ID, labels map[string]string, h *hookLog) *Pod {
		dp, err := Start(ctx, Config{
			PodID: p.name, Identity: id, Addrs: []netip.Addr{p.ip},
			Workload: authz.Workload{Namespace: "demo", Name: p.name, Labels: labels, Identity: id},
			Capture:  m, Router: router, Authorizer: engine,
			SVIDs: svids, Bundles: ca.Bundle(), Hooks: h.hooks(), Logger: logger, Live: live,
		})
		if err != nil {
			t.Fatalf("start %s: %v", p.name, err)
		}
		t.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			if err := dp.Stop(sctx); err != nil {
				t.Errorf("stop %s: %v", p.name, err)
			}
		})
		return dp
	}
	dpA := start(a, idA, map[string]string{"app": "client"}, hooksA)
	dpB := start(b, idB, map[string]string{"app": "server"}, hooksB)

	dst := netip.AddrPortFrom(b.ip, appPort)
	var mk [8]byte
	rand.Read(mk[:])
	marker := "ambit-dataplane-marker-" + hex.EncodeToString(mk[:])

	// 1. Allowed: HBONE with mutual TLS, nothing in plaintext on B's wire.
	sn := nstest.Sniff(t, b.hostIf)
	conn, err := a.dial(ctx, dst)
	if err != nil {
		t.Fatalf("app in A dial %v: %v", dst, err)
	}
	if err := roundTrip(conn, marker); err != nil {
		t.Fatalf("round trip A -> B through the mesh: %v", err)
	}
	select {
	case from := <-app.seen:
		// ambit dials the app from inside B with its own socket.
		if from.Addr().Unmap() != b.ip {
			t.Errorf("app in B saw a connection from %v, want ambit's socket in B (%v)", from, b.ip)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("app in B never saw the connection")
	}
	conn.Close()
	srv := hooksB.nextEnd(t, tunnel.Inbound)
	if srv.Source != idA || srv.Destination != idB {
		t.Errorf("server hook: source %v destination %v, want %v -> %v", srv.Source, srv.Destination, idA, idB)
	}
	if srv.Outcome != tunnel.OutcomeOK || srv.DestAddr != dst {
		t.Errorf("server hook: outcome %q dest %v, want ok %v", srv.Outcome, srv.DestAddr, dst)
	}
	if srv.BytesSent != int64(len(marker)) || srv.BytesRecv != int64(len(marker)) {
		t.Errorf("server hook bytes %d/%d, want %d each way", srv.BytesSent, srv.BytesRecv, len(marker))
	}
	cli := hooksA.nextEnd(t, tunnel.Outbound)
	if cli.Destination != idB || cli.Source != idA || cli.Outcome != tunnel.OutcomeOK {
		t.Errorf("client hook: %v -> %v outcome %q, want %v -> %v ok", cli.Source, cli.Destination, cli.Outcome, idA, idB)
	}
	frames := sn.Close()
	ports, sawMarker := tcpPorts(frames, []byte(marker))
	if sawMarker {
		t.Error("the app's bytes crossed B's veth in plaintext")
	}
	if ports[tunnel.HBONEPort] == 0 {
		t.Errorf("no TCP to %d on B's veth (%d frames, ports %v)", tunnel.HBONEPort, len(frames), ports)
	}
	if ports[appPort] != 0 {
		t.Errorf("%d TCP segments to the app port %d on B's veth: traffic bypassed the tunnel", ports[appPort], appPort)
	}
	if s := dpA.Stats(); s.OutboundAccepted != 1 || s.OutboundHBONE != 1 {
		t.Errorf("A stats %+v, want 1 accepted, 1 HBONE", s)
	}

	// 2. A DENY policy for A's principal. A live HBONE connection from A is
	// closed within a second of the change (Engine.Update, Live.Recheck),
	// both ends seeing a reset; a live plaintext connection from C (no
	// principal, so not denied) keeps working.
	const hboneMsg, plainMsg = "live mesh connection", "live plaintext connection"
	liveHBONE, err := a.dial(ctx, dst)
	if err != nil {
		t.Fatalf("app in A dial %v: %v", dst, err)
	}
	defer liveHBONE.Close()
	if err := roundTrip(liveHBONE, hboneMsg); err != nil {
		t.Fatalf("live HBONE connection A -> B: %v", err)
	}
	livePlain, err := c.dial(ctx, dst)
	if err != nil {
		t.Fatalf("plaintext C -> B: %v", err)
	}
	defer livePlain.Close()
	if err := roundTrip(livePlain, plainMsg); err != nil {
		t.Fatalf("live plaintext connection C -> B: %v", err)
	}
	for range 2 {
		select {
		case <-app.seen:
		case <-time.After(5 * time.Second):
			t.Fatal("app in B never saw both live connections")
		}
	}
	deny := &v1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "deny-client", UID: "u1", ResourceVersion: "1"},
		Spec: v1alpha1.AuthorizationPolicySpec{
			Action: v1alpha1.ActionDeny,
			Rules: []v1alpha1.Rule{{From: []v1alpha1.RuleFrom{{Source: &v1alpha1.Source{
				Principals: []string{"cluster.local/ns/demo/sa/client"}}}}}},
		},
	}
	changed := time.Now()
	engine.Update([]*v1alpha1.AuthorizationPolicy{deny}, nil)
	if n := live.Recheck(engine); n != 1 {
		t.Errorf("Live.Recheck after the DENY closed %d connections, want 1 (the HBONE one)", n)
	}
	// The bound: closed within a second of the change.
	liveHBONE.SetReadDeadline(changed.Add(time.Second))
	if n, err := liveHBONE.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("live HBONE connection a second after the DENY: read %d, %v; want a reset", n, err)
	} else {
		t.Logf("live HBONE connection reset %v after the policy update", time.Since(changed).Round(time.Microsecond))
	}
	if err := roundTrip(livePlain, plainMsg); err != nil {
		t.Errorf("the plaintext connection did not survive a DENY aimed at A's principal: %v", err)
	}
	srv = hooksB.nextEnd(t, tunnel.Inbound)
	if srv.Outcome != tunnel.OutcomeRevoked || srv.Source != idA || srv.Policy != "demo/deny-client" ||
		!strings.HasPrefix(srv.Reason, "policy changed: ") || !errors.Is(srv.Err, tunnel.ErrRevoked) {
		t.Errorf("server hook of the revoked stream: outcome %q source %v policy %q reason %q err %v; want %q from %v by demo/deny-client",
			srv.Outcome, srv.Source, srv.Policy, srv.Reason, srv.Err, tunnel.OutcomeRevoked, idA)
	}
	if srv.BytesSent != int64(len(hboneMsg)) || srv.BytesRecv != int64(len(hboneMsg)) {
		t.Errorf("server hook of the revoked stream: bytes %d/%d, want %d each way", srv.BytesSent, srv.BytesRecv, len(hboneMsg))
	}
	if cli := hooksA.nextEnd(t, tunnel.Outbound); cli.Outcome != tunnel.OutcomeReset || cli.Source != idA {
		t.Errorf("client hook of the revoked stream: outcome %q source %v, want %q from %v", cli.Outcome, cli.Source, tunnel.OutcomeReset, idA)
	}
	if s := dpB.Stats(); s.InboundHBONERevoked != 1 || s.InboundPlainRevoked != 0 {
		t.Errorf("B stats %+v, want 1 HBONE stream revoked, no plaintext", s)
	}
	if _, srvStats := dpB.TunnelStats(); srvStats.Revoked != 1 || srvStats.StreamsActive != 0 {
		t.Errorf("B tunnel server stats %+v, want 1 revoked, none active", srvStats)
	}
	livePlain.Close()
	if ci := hooksB.nextEnd(t, tunnel.Inbound); ci.Outcome != tunnel.OutcomeOK || ci.SourceAddr.Addr() != c.ip ||
		ci.BytesSent != 2*int64(len(plainMsg)) {
		t.Errorf("surviving plaintext connection reported outcome %q from %v, %d bytes; want ok from %v, %d bytes",
			ci.Outcome, ci.SourceAddr, ci.BytesSent, c.ip, 2*len(plainMsg))
	}

	// The next connection from A fails and the app sees nothing.
	conn, err = a.dial(ctx, dst)
	expectRefused(t, conn, err, "A -> B under DENY")
	expectNothing(t, app, "A -> B under DENY")
	if srv := hooksB.nextEnd(t, tunnel.Inbound); srv.Outcome != tunnel.OutcomeDenied || srv.Source != idA {
		t.Errorf("server hook under DENY: outcome %q source %v, want %q from %v", srv.Outcome, srv.Source, tunnel.OutcomeDenied, idA)
	}

	// 3. Plaintext from a netns outside the mesh to B's app port lands on
	// B's 15006: refused under STRICT, carried under PERMISSIVE.
	peer := func(mode v1alpha1.MTLSMode) *v1alpha1.PeerAuthentication {
		return &v1alpha1.PeerAuthentication{
			ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "default", UID: "p1", ResourceVersion: string(mode)},
			Spec:       v1alpha1.PeerAuthenticationSpec{Mtls: &v1alpha1.MutualTLS{Mode: mode}},
		}
	}
	engine.Update(nil, []*v1alpha1.PeerAuthentication{peer(v1alpha1.MTLSStrict)})
	conn, err = c.dial(ctx, dst)
	expectRefused(t, conn, err, "plaintext C -> B under STRICT")
	expectNothing(t, app, "plaintext C -> B under STRICT")
	if ci := hooksB.nextEnd(t, tunnel.Inbound); ci.Outcome != tunnel.OutcomeDenied || ci.SourceAddr.Addr() != c.ip {
		t.Errorf("plaintext under STRICT reported outcome %q from %v, want %q from %v", ci.Outcome, ci.SourceAddr, tunnel.OutcomeDenied, c.ip)
	}

	engine.Update(nil, []*v1alpha1.PeerAuthentication{peer(v1alpha1.MTLSPermissive)})
	conn, err = c.dial(ctx, dst)
	if err != nil {
		t.Fatalf("plaintext C -> B under PERMISSIVE: %v", err)
	}
	if err := roundTrip(conn, "plaintext hello"); err != nil {
		t.Errorf("plaintext C -> B under PERMISSIVE: %v", err)
	}
	select {
	case <-app.seen:
	case <-time.After(5 * time.Second):
		t.Error("app in B never saw the PERMISSIVE plaintext connection")
	}
	// 4. Back to STRICT: rechecking live connections closes the open one.
	engine.Update(nil, []*v1alpha1.PeerAuthentication{peer(v1alpha1.MTLSStrict)})
	if n := live.Recheck(engine); n != 1 {
		t.Errorf("Live.Recheck closed %d connections, want 1", n)
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("plaintext connection still open after STRICT and recheck: read %d, %v", n, err)
	}
	conn.Close()
	if ci := hooksB.nextEnd(t, tunnel.Inbound); ci.BytesSent != int64(len("plaintext hello")) || ci.Outcome != tunnel.OutcomeRevoked ||
		!errors.Is(ci.Err, tunnel.ErrRevoked) {
		t.Errorf("revoked plaintext connection reported outcome %q, %d bytes, err %v; want %q after %d bytes",
			ci.Outcome, ci.BytesSent, ci.Err, tunnel.OutcomeRevoked, len("plaintext hello"))
	}
	if s := dpB.Stats(); s.InboundPlain != 3 || s.InboundPlainDenied != 1 || s.InboundPlainRevoked != 1 || s.InboundHBONERevoked != 1 {
		t.Errorf("B stats %+v, want 3 plaintext, 1 denied, 1 plaintext and 1 HBONE revoked", s)
	}
	if len(hooksB.starts()) == 0 {
		t.Error("no OnStart reported on B")
	}
}

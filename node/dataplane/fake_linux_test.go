package dataplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
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
	"k8s.io/apimachinery/pkg/types"
)

// fakeCapture stands in for redirect.Manager on loopback: per pod three
// listeners, original destinations handed out in the order the test queues
// them, and dials with an address alias table (a pod address:port maps to
// where its app really listens).
type fakeCapture struct {
	t     *testing.T
	mu    sync.Mutex
	pods  map[string]redirect.Listeners
	alias map[netip.AddrPort]string
	next  chan netip.AddrPort
	dials []string // "id address"
}

func newFakeCapture(t *testing.T) *fakeCapture {
	return &fakeCapture{t: t, pods: map[string]redirect.Listeners{}, alias: map[netip.AddrPort]string{},
		next: make(chan netip.AddrPort, 8)}
}

func (f *fakeCapture) addPod(id string, ip netip.Addr) redirect.Listeners {
	f.t.Helper()
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
		if err != nil {
			f.t.Skipf("cannot listen on %v: %v", ip, err)
		}
		f.t.Cleanup(func() { ln.Close() })
		return ln
	}
	ls := redirect.Listeners{Outbound: listen(), Inbound: listen(), HBONE: listen()}
	f.mu.Lock()
	f.pods[id] = ls
	f.mu.Unlock()
	return ls
}

func (f *fakeCapture) Listeners(id string) (redirect.Listeners, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ls, ok := f.pods[id]
	if !ok {
		return ls, redirect.ErrUnknownPod
	}
	return ls, nil
}

func (f *fakeCapture) OriginalDst(net.Conn) (netip.AddrPort, error) {
	select {
	case d := <-f.next:
		return d, nil
	default:
		return netip.AddrPort{}, redirect.ErrNoOriginalDst
	}
}

func (f *fakeCapture) Dial(ctx context.Context, id, network, address string) (net.Conn, error) {
	f.mu.Lock()
	f.dials = append(f.dials, id+" "+address)
	if ap, err := netip.ParseAddrPort(address); err == nil {
		if real, ok := f.alias[ap]; ok {
			address = real
		}
	}
	f.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

func echoServer(t *testing.T) (netip.AddrPort, chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan struct{}, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			seen <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort(), seen
}

type fakeEnv struct {
	fc         *fakeCapture
	ca         *identitytest.CA
	svids      *identitytest.Source
	engine     *authz.Engine
	router     staticRouter
	hooks      *hookLog
	idA, idB   spiffeid.ID
	ipA, ipB   netip.Addr
	lsA, lsB   redirect.Listeners
	appB       netip.AddrPort // B's app port as B sees it (ipB:port)
	appSeen    chan struct{}
	passTarget netip.AddrPort
	passSeen   chan struct{}
}

func newFakeEnv(t *testing.T) *fakeEnv {
	e := &fakeEnv{fc: newFakeCapture(t), ca: identitytest.MustCA("cluster.local"), hooks: newHookLog(),
		idA: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/a"),
		idB: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/b"),
		ipA: netip.MustParseAddr("127.0.0.1"),
		ipB: netip.MustParseAddr("127.0.0.2"),
	}
	e.svids = identitytest.NewSource(e.ca)
	var err error
	if e.engine, err = authz.New(authz.Options{RootNamespace: "ambit-system"}); err != nil {
		t.Fatal(err)
	}
	e.lsA, e.lsB = e.fc.addPod("a", e.ipA), e.fc.addPod("b", e.ipB)
	var real netip.AddrPort
	real, e.appSeen = echoServer(t)
	e.appB = netip.AddrPortFrom(e.ipB, 8080)
	e.fc.alias[e.appB] = real.String()
	e.passTarget, e.passSeen = echoServer(t)
	e.router = staticRouter{
		e.ipB:               {Kind: tables.HBONE, Tunnel: e.lsB.HBONE.Addr().(*net.TCPAddr).AddrPort(), Identity: e.idB},
		e.passTarget.Addr(): {Kind: tables.Passthrough},
	}
	return e
}

func (e *fakeEnv) config(id string) Config {
	cfg := Config{PodID: id, Identity: e.idA, Addrs: []netip.Addr{e.ipA},
		Workload: authz.Workload{Namespace: "demo", Name: id},
		Capture:  e.fc, Router: e.router, Authorizer: e.engine, SVIDs: e.svids, Bundles: e.ca.Bundle(),
		Hooks: e.hooks.hooks(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if id == "b" {
		cfg.Identity, cfg.Addrs = e.idB, []netip.Addr{e.ipB}
	}
	return cfg
}

func startPod(t *testing.T, cfg Config) *Pod {
	t.Helper()
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start %s: %v", cfg.PodID, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.Stop(ctx)
	})
	return p
}

// captured dials A's outbound listener as if the capture had redirected a
// connect to dst.
func (e *fakeEnv) captured(t *testing.T, dst netip.AddrPort) net.Conn {
	t.Helper()
	e.fc.next <- dst
	c, err := net.Dial("tcp", e.lsA.Outbound.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConfigRequired(t *testing.T) {
	e := newFakeEnv(t)
	for name, mut := range map[string]func(*Config){
		"PodID": func(c *Config) { c.PodID = "" }, "Identity": func(c *Config) { c.Identity = spiffeid.ID{} },
		"Addrs": func(c *Config) { c.Addrs = nil }, "Namespace": func(c *Config) { c.Workload.Namespace = "" },
		"Capture": func(c *Config) { c.Capture = nil }, "Router": func(c *Config) { c.Router = nil },
		"Authorizer": func(c *Config) { c.Authorizer = nil }, "SVIDs": func(c *Config) { c.SVIDs = nil },
		"Bundles":  func(c *Config) { c.Bundles = nil },
		"bad addr": func(c *Config) { c.Addrs = []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.1")} },
	} {
		cfg := e.config("a")
		mut(&cfg)
		if _, err := Start(context.Background(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Start = %v, want ErrConfig", name, err)
		}
	}
	cfg := e.config("a")
	cfg.PodID = "nope"
	if _, err := Start(context.Background(), cfg); !errors.Is(err, redirect.ErrUnknownPod) {
		t.Errorf("unknown pod: Start = %v, want ErrUnknownPod", err)
	}
}

// TestOutboundRoutes: every Route kind on loopback, and a connection the
// capture has no destination for.
func TestOutboundRoutes(t *testing.T) {
	e := newFakeEnv(t)
	a := startPod(t, e.config("a"))
	startPod(t, e.config("b"))

	// HBONE to B, through B's tunnel server and authorization, to B's app.
	c := e.captured(t, e.appB)
	if err := roundTrip(c, "over hbone"); err != nil {
		t.Fatalf("HBONE round trip: %v", err)
	}
	c.Close()
	<-e.appSeen
	if ci := e.hooks.nextEnd(t, tunnel.Inbound); ci.Source != e.idA || ci.DestAddr != e.appB {
		t.Errorf("server saw %v -> %v, want %v -> %v", ci.Source, ci.DestAddr, e.idA, e.appB)
	}
	if ci := e.hooks.nextEnd(t, tunnel.Outbound); ci.Destination != e.idB || ci.DestAddr != e.appB {
		t.Errorf("client saw %v at %v, want %v at %v", ci.Destination, ci.DestAddr, e.idB, e.appB)
	}
	e.fc.mu.Lock()
	dials := append([]string(nil), e.fc.dials...)
	e.fc.mu.Unlock()
	want := map[string]bool{"a " + e.lsB.HBONE.Addr().String(): false, "b " + e.appB.String(): false}
	for _, d := range dials {
		if _, ok := want[d]; ok {
			want[d] = true
		}
	}
	for d, ok := range want {
		if !ok {
			t.Errorf("no marked dial %q (dials %q)", d, dials)
		}
	}

	// Passthrough.
	c = e.captured(t, e.passTarget)
	if err := roundTrip(c, "plain"); err != nil {
		t.Fatalf("passthrough round trip: %v", err)
	}
	c.Close()
	<-e.passSeen
	if ci := e.hooks.nextEnd(t, tunnel.Outbound); ci.DestAddr != e.passTarget || ci.Outcome != tunnel.OutcomeOK {
		t.Errorf("passthrough reported %v outcome %q", ci.DestAddr, ci.Outcome)
	}

	// Deny route, wrong identity, no original destination: refused.
	other := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/impostor")
	e.router[netip.MustParseAddr("127.0.0.4")] = tables.Route{Kind: tables.HBONE, Tunnel: e.lsB.HBONE.Addr().(*net.TCPAddr).AddrPort(), Identity: other}
	for _, dst := range []netip.AddrPort{netip.MustParseAddrPort("127.0.0.9:80"), netip.MustParseAddrPort("127.0.0.4:8080"), {}} {
		if dst.IsValid() {
			e.fc.next <- dst
		}
		c, err := net.Dial("tcp", e.lsA.Outbound.Addr().String())
		if err != nil {
			continue // refused before connect returned: a reset on loopback can win the race
		}
		if err := roundTrip(c, "x"); err == nil {
			t.Errorf("%v: round trip succeeded, want refused", dst)
		}
		c.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		s := a.Stats()
		if s.OutboundDenied == 1 && s.OutboundFailed == 1 && s.NoOriginalDst == 1 {
			if s.OutboundAccepted != 5 || s.OutboundHBONE != 1 || s.OutboundPassthrough != 1 {
				t.Errorf("stats %+v", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want 1 denied, 1 failed (identity), 1 without destination", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cs, _ := a.TunnelStats(); cs.IdentityErrors != 1 {
		t.Errorf("client identity errors %d, want 1", cs.IdentityErrors)
	}
}

// TestStopKeepsListeners: Stop cuts a live connection at its deadline,
// leaves the capture's listeners open, and a new Start serves them again.
func TestStopKeepsListeners(t *testing.T) {
	e := newFakeEnv(t)
	startPod(t, e.config("b"))
	a, err := Start(context.Background(), e.config("a"))
	if err != nil {
		t.Fatal(err)
	}
	c := e.captured(t, e.passTarget)
	if err := roundTrip(c, "live"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err = a.Stop(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop with a live connection = %v, want DeadlineExceeded", err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("live connection not cut by Stop: %v", err)
	}
	c.Close()
	if ci := e.hooks.nextEnd(t, tunnel.Outbound); ci.Outcome != tunnel.OutcomeShutdown {
		t.Errorf("cut connection outcome %q, want %q", ci.Outcome, tunnel.OutcomeShutdown)
	}

	a2 := startPod(t, e.config("a"))
	c = e.captured(t, e.passTarget)
	if err := roundTrip(c, "after restart"); err != nil {
		t.Fatalf("round trip after Stop and Start on the same listeners: %v", err)
	}
	c.Close()
	if s := a2.Stats(); s.OutboundPassthrough != 1 {
		t.Errorf("restarted pod stats %+v", s)
	}
}

// TestPlainInbound: a plaintext connection on 15006 is authorized (no
// policy: PERMISSIVE, allowed), dialed at its local address and reported.
func TestPlainInbound(t *testing.T) {
	e := newFakeEnv(t)
	b := startPod(t, e.config("b"))
	// The fake listener's local address is B's address at the listener's
	// port; alias it to the app so the allowed case reaches it.
	inb := e.lsB.Inbound.Addr().(*net.TCPAddr).AddrPort()
	real, seen := echoServer(t)
	e.fc.mu.Lock()
	e.fc.alias[inb] = real.String()
	e.fc.mu.Unlock()
	c, err := net.Dial("tcp", inb.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(c, "plaintext"); err != nil {
		t.Fatalf("PERMISSIVE plaintext: %v", err)
	}
	c.Close()
	<-seen
	ci := e.hooks.nextEnd(t, tunnel.Inbound)
	if ci.DestAddr != inb || ci.SourceAddr.Addr() != e.ipA || ci.Outcome != tunnel.OutcomeOK {
		t.Errorf("plaintext reported %v -> %v outcome %q", ci.SourceAddr, ci.DestAddr, ci.Outcome)
	}
	if s := b.Stats(); s.InboundPlain != 1 || s.InboundPlainDenied != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestLiveRevoke: with Config.Live, a DENY for A's principal followed by
// Live.Recheck resets A's live HBONE connection into B (both ends see it,
// B reports REVOKED) and spares a plaintext connection into B.
func TestLiveRevoke(t *testing.T) {
	e := newFakeEnv(t)
	live := authz.NewLive()
	cfgB := e.config("b")
	cfgB.Live = live
	b := startPod(t, cfgB)
	startPod(t, e.config("a"))
	inb := e.lsB.Inbound.Addr().(*net.TCPAddr).AddrPort()
	e.fc.mu.Lock()
	e.fc.alias[inb] = e.fc.alias[e.appB]
	e.fc.mu.Unlock()

	mesh := e.captured(t, e.appB)
	defer mesh.Close()
	if err := roundTrip(mesh, "over hbone"); err != nil {
		t.Fatalf("HBONE round trip: %v", err)
	}
	plain, err := net.Dial("tcp", inb.String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := roundTrip(plain, "plaintext"); err != nil {
		t.Fatalf("plaintext round trip: %v", err)
	}
	if n := live.Len(); n != 2 {
		t.Fatalf("%d live connections registered, want 2 (HBONE and plaintext)", n)
	}

	e.engine.Update([]*v1alpha1.AuthorizationPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "deny-a", UID: "u1", ResourceVersion: "1"},
		Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionDeny,
			Rules: []v1alpha1.Rule{{From: []v1alpha1.RuleFrom{{Source: &v1alpha1.Source{
				Principals: []string{"cluster.local/ns/demo/sa/a"}}}}}}},
	}}, nil)
	if n := live.Recheck(e.engine); n != 1 {
		t.Errorf("Recheck closed %d connections, want 1", n)
	}
	mesh.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := mesh.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("revoked HBONE connection: read %d, %v; want it closed", n, err)
	}
	if err := roundTrip(plain, "still plaintext"); err != nil {
		t.Errorf("plaintext connection after the DENY: %v", err)
	}
	srv := e.hooks.nextEnd(t, tunnel.Inbound)
	if srv.Outcome != tunnel.OutcomeRevoked || srv.Source != e.idA || srv.Policy != "demo/deny-a" ||
		srv.Reason != "policy changed: "+authz.ReasonDenyPolicy || !errors.Is(srv.Err, tunnel.ErrRevoked) {
		t.Errorf("server reported outcome %q source %v policy %q reason %q err %v", srv.Outcome, srv.Source, srv.Policy, srv.Reason, srv.Err)
	}
	if cli := e.hooks.nextEnd(t, tunnel.Outbound); cli.Outcome != tunnel.OutcomeReset {
		t.Errorf("client reported outcome %q, want %q", cli.Outcome, tunnel.OutcomeReset)
	}
	if s := b.Stats(); s.InboundHBONERevoked != 1 || s.InboundPlainRevoked != 0 {
		t.Errorf("B stats %+v, want 1 HBONE stream revoked", s)
	}
	plain.Close()
	if ci := e.hooks.nextEnd(t, tunnel.Inbound); ci.Outcome != tunnel.OutcomeOK || ci.DestAddr != inb {
		t.Errorf("plaintext reported %v outcome %q, want ok", ci.DestAddr, ci.Outcome)
	}
	waitLen(t, live, 0)
}

// waitLen waits until l holds n connections (each unregisters as its
// handler returns).
func waitLen(t *testing.T, l *authz.Live, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.Len() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d live connections registered, want %d", l.Len(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// updateAfterDecide is a hand-written Authorizer: the real engine, with an
// Update (to policies) landing right after its next decision, before the
// data path registers the connection with Live, as a concurrent policy
// change can.
type updateAfterDecide struct {
	*authz.Engine
	mu       sync.Mutex
	policies []*v1alpha1.AuthorizationPolicy // applied after the next Decide, then nil
}

func (u *updateAfterDecide) Decide(r authz.Request) authz.Decision {
	d := u.Engine.Decide(r)
	u.mu.Lock()
	aps := u.policies
	u.policies = nil
	u.mu.Unlock()
	if aps != nil {
		u.Engine.Update(aps, nil)
	}
	return d
}

func (u *updateAfterDecide) arm(aps ...*v1alpha1.AuthorizationPolicy) {
	u.mu.Lock()
	u.policies = aps
	u.mu.Unlock()
}

// TestLiveRevokeRace: a DENY that lands between a connection's decision
// and its registration with Live (its Recheck would not see it) still
// closes it, HBONE and plaintext.
func TestLiveRevokeRace(t *testing.T) {
	e := newFakeEnv(t)
	racy := &updateAfterDecide{Engine: e.engine}
	cfgB := e.config("b")
	cfgB.Live, cfgB.Authorizer = authz.NewLive(), racy
	b := startPod(t, cfgB)
	startPod(t, e.config("a"))
	inb := e.lsB.Inbound.Addr().(*net.TCPAddr).AddrPort()
	e.fc.mu.Lock()
	e.fc.alias[inb] = e.fc.alias[e.appB]
	e.fc.mu.Unlock()
	deny := func(name, principal string) *v1alpha1.AuthorizationPolicy {
		from := &v1alpha1.Source{Principals: []string{principal}}
		if principal == "" {
			from = &v1alpha1.Source{IPBlocks: []string{e.ipA.String() + "/32"}}
		}
		return &v1alpha1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: name, UID: types.UID(name), ResourceVersion: "1"},
			Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionDeny,
				Rules: []v1alpha1.Rule{{From: []v1alpha1.RuleFrom{{Source: from}}}}},
		}
	}

	racy.arm(deny("deny-a", "cluster.local/ns/demo/sa/a"))
	// A resets the app's socket once B revokes the stream; on a loaded
	// machine that can all happen before connect returns to the dialer.
	e.fc.next <- e.appB
	if mesh, _ := dialMayBeReset(t, e.lsA.Outbound.Addr().String()); mesh != nil {
		if err := roundTrip(mesh, "must not arrive"); err == nil {
			t.Error("HBONE connection allowed just before a DENY carried bytes")
		}
		mesh.Close()
	}
	if ci := e.hooks.nextEnd(t, tunnel.Inbound); ci.Outcome != tunnel.OutcomeDenied || !errors.Is(ci.Err, tunnel.ErrRevoked) ||
		ci.Policy != "demo/deny-a" {
		t.Errorf("server reported outcome %q policy %q err %v, want DENY by demo/deny-a, revoked", ci.Outcome, ci.Policy, ci.Err)
	}

	racy.arm(deny("deny-a", "cluster.local/ns/demo/sa/a"), deny("deny-ip", ""))
	// The reset can win the race with connect returning on loopback.
	if plain, _ := dialMayBeReset(t, inb.String()); plain != nil {
		if err := roundTrip(plain, "must not arrive"); err == nil {
			t.Error("plaintext connection allowed just before a DENY carried bytes")
		}
		plain.Close()
	}
	if ci := e.hooks.nextEnd(t, tunnel.Inbound); ci.Outcome != tunnel.OutcomeRevoked || ci.Policy != "demo/deny-ip" {
		t.Errorf("plaintext reported outcome %q policy %q, want %q by demo/deny-ip", ci.Outcome, ci.Policy, tunnel.OutcomeRevoked)
	}
	if s := b.Stats(); s.InboundHBONERevoked != 1 || s.InboundPlainRevoked != 1 {
		t.Errorf("B stats %+v, want one HBONE and one plaintext connection revoked", s)
	}
	waitLen(t, cfgB.Live, 0)
}

// dialMayBeReset dials addr on loopback, where a peer that accepts and
// resets at once can win the race with connect returning: that reset comes
// back as ECONNRESET from the dial itself, and the connection as nil.
// Any other dial error fails the test.
func dialMayBeReset(t *testing.T, addr string) (net.Conn, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		t.Logf("dial %s: reset before connect returned: %v", addr, err)
		return nil, err
	}
	if err != nil {
		t.Fatal(err)
	}
	return c, nil
}

// TestQuiesceServesQueued: connections that keep landing on a pod's
// listener while the daemon stops (until its successor's takeover of the
// listeners is complete) are accepted and served: Stop comes only after the
// listeners have been quiet, instead of leaving late arrivals queued to be
// reset when the listeners close.
func TestQuiesceServesQueued(t *testing.T) {
	e := newFakeEnv(t)
	b, err := Start(context.Background(), e.config("b"))
	if err != nil {
		t.Fatal(err)
	}
	inb := e.lsB.Inbound.Addr().(*net.TCPAddr).AddrPort()
	real, _ := echoServer(t)
	e.fc.mu.Lock()
	e.fc.alias[inb] = real.String()
	e.fc.mu.Unlock()
	// Arrivals every 20 ms for 200 ms, starting as the stop begins. The
	// quiet period is far longer than the gap between arrivals, so a loaded
	// machine delaying the dialer (a gap of a few hundred ms was seen) does
	// not end Quiesce before the last arrival.
	arrived := make(chan net.Conn, 16)
	go func() {
		defer close(arrived)
		for i := 0; i < 10; i++ {
			c, err := net.Dial("tcp", inb.String())
			if err != nil {
				t.Error(err)
				return
			}
			arrived <- c
			time.Sleep(20 * time.Millisecond)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The stop begins once the first arrival has been served.
	first := <-arrived
	first.SetDeadline(time.Now().Add(3 * time.Second))
	if err := roundTrip(first, "first"); err != nil {
		t.Fatal(err)
	}
	first.Close()
	stopped := make(chan error, 1)
	go func() {
		b.Quiesce(ctx, time.Second)
		stopped <- b.Stop(ctx)
	}()
	i := 1
	for c := range arrived {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if err := roundTrip(c, "late-"+strconv.Itoa(i)); err != nil {
			t.Errorf("connection %d arriving during the stop: %v", i, err)
		}
		c.Close()
		i++
	}
	if err := <-stopped; err != nil {
		t.Errorf("Stop: %v", err)
	}
	if s := b.Stats(); s.InboundPlain != 10 {
		t.Errorf("served %d plaintext connections, want 10", s.InboundPlain)
	}
}

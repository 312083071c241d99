package enrol

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/node/dataplane"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/cnimsg"
	"github.com/ambit-mesh/ambit/redirect/cniserver"
)

// Hand-written fakes of the enroller's collaborators.

type fakeTables struct {
	mu   sync.Mutex
	pods map[string]tables.Workload // ns/name
	nss  map[string]bool
}

func (f *fakeTables) Pod(ns, name string) (tables.Workload, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.pods[ns+"/"+name]
	return w, ok
}
func (f *fakeTables) NamespaceEnrolled(ns string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nss[ns]
}
func (f *fakeTables) Lookup(a netip.Addr) (tables.Workload, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.pods {
		if slices.Contains(w.IPs, a) {
			return w, true
		}
	}
	return tables.Workload{}, false
}
func (f *fakeTables) LocalEnrolled() []tables.Workload {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []tables.Workload
	for _, w := range f.pods {
		if w.Enrolled && w.Node == "node-1" {
			out = append(out, w)
		}
	}
	return out
}

// set stores a pod, computing Enrolled as the real tables do.
func (f *fakeTables) set(w tables.Workload) tables.Workload {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Enrolled = w.Eligible && f.nss[w.Namespace] && len(w.IPs) > 0
	f.pods[w.Namespace+"/"+w.Name] = w
	return w
}

func (f *fakeTables) label(ns string, on bool) {
	f.mu.Lock()
	f.nss[ns] = on
	f.mu.Unlock()
	for _, w := range f.snapshot() {
		if w.Namespace == ns {
			f.set(w)
		}
	}
}

func (f *fakeTables) snapshot() []tables.Workload {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []tables.Workload
	for _, w := range f.pods {
		out = append(out, w)
	}
	return out
}

type fakeCapture struct {
	mu      sync.Mutex
	applied map[string]redirect.PodNetns
	cfgs    map[string]redirect.Config
	removed []string
	fail    error
}

func (f *fakeCapture) Apply(_ context.Context, p redirect.PodNetns, c redirect.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	p.Netns = nil
	f.applied[p.ID] = p
	f.cfgs[p.ID] = c
	return nil
}
func (f *fakeCapture) Check(context.Context, redirect.PodNetns, redirect.Config) error { return nil }
func (f *fakeCapture) Remove(_ context.Context, p redirect.PodNetns) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.applied, p.ID)
	f.removed = append(f.removed, p.ID)
	return nil
}
func (f *fakeCapture) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.applied {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

type fakeData struct {
	mu   sync.Mutex
	pods map[string]dataplane.PodSpec
	sets int
}

func (f *fakeData) Set(_ context.Context, s dataplane.PodSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods[s.PodID] = s
	f.sets++
	return nil
}
func (f *fakeData) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, id)
	return nil
}
func (f *fakeData) spec(id string) (dataplane.PodSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.pods[id]
	return s, ok
}

type fixture struct {
	t        *testing.T
	tables   *fakeTables
	capture  *fakeCapture
	data     *fakeData
	e        *Enroller
	netns    string // a file standing in for a pod netns
	found    map[netip.Addr]redirect.Found
	prefetch []spiffeid.ID
	refs     map[spiffeid.ID]int
	pfErr    error
	block    bool // Acquire waits for its context, as a Manager whose CA does not answer
	logs     *syncBuf
	mu       sync.Mutex
}

func newFixture(t *testing.T) *fixture {
	dir := t.TempDir()
	fx := &fixture{t: t, tables: &fakeTables{pods: map[string]tables.Workload{}, nss: map[string]bool{}},
		capture: &fakeCapture{applied: map[string]redirect.PodNetns{}, cfgs: map[string]redirect.Config{}},
		data:    &fakeData{pods: map[string]dataplane.PodSpec{}},
		netns:   filepath.Join(dir, "cni-1234"), found: map[netip.Addr]redirect.Found{}, refs: map[spiffeid.ID]int{},
		logs: &syncBuf{}}
	if err := os.WriteFile(fx.netns, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fx.e = New(Config{
		LocalNode: "node-1", TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Tables: fx.tables, Capture: fx.capture, Data: fx.data,
		Acquire: func(ctx context.Context, id spiffeid.ID) error {
			if fx.block {
				<-ctx.Done()
				return fmt.Errorf("%w for %s: 3 failed attempts: dial tcp 10.96.0.12:15012: connect: connection refused (%w)",
					identity.ErrNoCertificate, id, ctx.Err())
			}
			fx.mu.Lock()
			defer fx.mu.Unlock()
			fx.prefetch = append(fx.prefetch, id)
			if fx.pfErr == nil {
				fx.refs[id]++
			}
			return fx.pfErr
		},
		Release: func(id spiffeid.ID) {
			fx.mu.Lock()
			defer fx.mu.Unlock()
			fx.refs[id]--
		},
		FindPod: func(a netip.Addr) (redirect.Found, error) {
			if f, ok := fx.found[a]; ok {
				return f, nil
			}
			return redirect.Found{}, redirect.ErrNetnsNotFound
		},
		HostPeer:       func(*os.File, string) (string, error) { return "veth1234", nil },
		Synced:         func(context.Context) error { return nil },
		UnknownPodWait: 100 * time.Millisecond, Retry: 20 * time.Millisecond, ReleaseGrace: 10 * time.Millisecond,
		NetnsCheck: 20 * time.Millisecond, StateDir: filepath.Join(dir, "enrolled"), CertWait: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(fx.logs, nil)),
	})
	return fx
}

var (
	ipA = netip.MustParseAddr("10.250.0.5")
	gw  = netip.MustParseAddr("10.250.0.1")
)

func workload(ns, name, uid string, ips ...netip.Addr) tables.Workload {
	return tables.Workload{Namespace: ns, Name: name, UID: uid, ServiceAccount: "web", Node: "node-1", IPs: ips, Eligible: true}
}

func (fx *fixture) cniPod(ns, name, uid, cid string) cnimsg.Pod {
	return cnimsg.Pod{Namespace: ns, Name: name, UID: uid, ContainerID: cid, Interface: "eth0", NetnsPath: fx.netns,
		IPs: []netip.Addr{ipA}, Gateways: []netip.Addr{gw}}
}

// add runs a CNI ADD with the pod cniserver passes.
func (fx *fixture) add(p cnimsg.Pod) (bool, error) {
	return fx.e.Add(context.Background(), cniserver.Pod{Pod: p,
		Netns:   redirect.PodNetns{ID: p.ContainerID, NetnsPath: p.NetnsPath, Interface: p.Interface, Addresses: p.IPs},
		Capture: redirect.Config{ProbeSources: p.Gateways}})
}

// idle: nothing is marked for the worker.
func (fx *fixture) idle() bool {
	fx.e.mu.Lock()
	defer fx.e.mu.Unlock()
	return fx.e.queue.Len() == 0
}

// settle runs the worker until cond holds (or fails the test).
func (fx *fixture) settle(cond func() bool, what string) {
	fx.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fx.e.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			fx.t.Fatalf("not reached: %s (capture %v, pending %v)", what, fx.capture.ids(), fx.e.Pending())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A new pod in an enrolled namespace is captured, certified and served
// before its ADD returns, with the identity of its service account.
func TestCNIAddEnrols(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	fx.tables.set(workload("shop", "web-1", "u1")) // no IP yet: the ADD comes first
	ok, err := fx.add(fx.cniPod("shop", "web-1", "u1", "c1"))
	if err != nil || !ok {
		t.Fatalf("add = %v, %v; want enrolled", ok, err)
	}
	if got := fx.capture.ids(); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("capture %v, want [c1]", got)
	}
	s, ok := fx.data.spec("c1")
	want := "spiffe://cluster.local/ns/shop/sa/web"
	if !ok || s.Identity.String() != want || !slices.Equal(s.Addrs, []netip.Addr{ipA}) || s.Workload.Namespace != "shop" {
		t.Fatalf("data path %+v, want identity %s and %s", s, want, ipA)
	}
	if len(fx.prefetch) != 1 || fx.prefetch[0].String() != want {
		t.Fatalf("prefetch %v", fx.prefetch)
	}
	// The pod then runs: the Enrol event finds it enrolled and changes nothing.
	w := fx.tables.set(workload("shop", "web-1", "u1", ipA))
	sets := fx.data.sets
	fx.e.queue.Add(tables.Event{Type: tables.Enrol, Workload: w})
	fx.settle(func() bool { return fx.idle() && fx.e.EnrolledCount() == 1 }, "event handled")
	if got := fx.capture.ids(); !slices.Equal(got, []string{"c1"}) || len(fx.capture.removed) != 0 {
		t.Errorf("capture after the event %v (removed %v)", got, fx.capture.removed)
	}
	if fx.data.sets > sets+1 {
		t.Errorf("data path set %d more times", fx.data.sets-sets)
	}
	if p := fx.e.Pending(); len(p) != 0 {
		t.Errorf("pending %v", p)
	}
}

// Pods outside the mesh pass; opted-out pods pass; an unknown pod in an
// enrolled namespace fails the ADD (retried) instead of starting uncaptured.
func TestCNIAddDecisions(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	fx.tables.set(workload("plain", "p", "u1"))
	if ok, err := fx.add(fx.cniPod("plain", "p", "u1", "c1")); ok || err != nil {
		t.Errorf("unlabelled namespace: %v, %v", ok, err)
	}
	out := workload("shop", "out", "u2")
	out.Eligible = false
	fx.tables.set(out)
	if ok, err := fx.add(fx.cniPod("shop", "out", "u2", "c2")); ok || err != nil {
		t.Errorf("opted out: %v, %v", ok, err)
	}
	if ok, err := fx.add(fx.cniPod("nowhere", "x", "u3", "c3")); ok || err != nil {
		t.Errorf("unknown pod, unlabelled namespace: %v, %v", ok, err)
	}
	ok, err := fx.add(fx.cniPod("shop", "ghost", "u4", "c4"))
	if ok || err == nil || !strings.Contains(err.Error(), "not in the node's view") {
		t.Errorf("unknown pod in an enrolled namespace: %v, %v; want an error", ok, err)
	}
	// A stale record with another UID is not the pod either.
	fx.tables.set(workload("shop", "again", "old-uid"))
	if _, err := fx.add(fx.cniPod("shop", "again", "new-uid", "c5")); err == nil {
		t.Error("a pod recreated under the same name was decided from its predecessor's record")
	}
	if got := fx.capture.ids(); len(got) != 0 {
		t.Errorf("captured %v", got)
	}
}

// A failing certificate fetch undoes the capture and fails the ADD.
func TestCNIAddUndo(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	fx.tables.set(workload("shop", "web-1", "u1"))
	fx.pfErr = errors.New("CA unreachable")
	if _, err := fx.add(fx.cniPod("shop", "web-1", "u1", "c1")); err == nil || !strings.Contains(err.Error(), "CA unreachable") {
		t.Fatalf("add: %v, want the CA error", err)
	}
	if got := fx.capture.ids(); len(got) != 0 {
		t.Errorf("capture left behind: %v", got)
	}
	if _, ok := fx.data.spec("c1"); ok {
		t.Error("data path started")
	}
}

// Labelling the namespace of running pods enrols them without a restart:
// through their recorded ADD, or by finding their netns by address. Removing
// the label releases them.
func TestLabelEnrolsRunningPods(t *testing.T) {
	fx := newFixture(t)
	fx.tables.set(workload("shop", "web-1", "u1"))
	if ok, _ := fx.add(fx.cniPod("shop", "web-1", "u1", "c1")); ok {
		t.Fatal("enrolled before the label")
	}
	fx.tables.set(workload("shop", "web-1", "u1", ipA))
	ipB := netip.MustParseAddr("10.250.0.6")
	fx.tables.set(workload("shop", "old-1", "u2", ipB)) // predates the daemon: no ADD seen
	fx.found[ipB] = redirect.Found{NetnsPath: fx.netns, Interface: "eth0", Addresses: []netip.Addr{ipB}, Gateways: []netip.Addr{gw}}

	fx.tables.label("shop", true)
	for _, w := range fx.tables.LocalEnrolled() {
		fx.e.queue.Add(tables.Event{Type: tables.Enrol, Workload: w})
	}
	fx.settle(func() bool { return fx.e.EnrolledCount() == 2 }, "both pods enrolled")
	if got := fx.capture.ids(); !slices.Equal(got, []string{"c1", "netns-cni-1234"}) {
		t.Fatalf("capture %v", got)
	}
	c := fx.capture.applied["c1"]
	if c.HostInterface != "veth1234" || c.Interface != "eth0" || !slices.Equal(fx.capture.cfgs["c1"].ProbeSources, []netip.Addr{gw}) {
		t.Errorf("capture of c1 %+v %+v: want host peer and the gateway as probe source", c, fx.capture.cfgs["c1"])
	}
	if s, ok := fx.data.spec("netns-cni-1234"); !ok || !slices.Equal(s.Addrs, []netip.Addr{ipB}) {
		t.Errorf("data path of the found pod: %+v", s)
	}

	fx.tables.label("shop", false)
	for _, w := range fx.tables.snapshot() {
		fx.e.queue.Add(tables.Event{Type: tables.Release, Workload: w})
	}
	fx.settle(func() bool { return fx.e.EnrolledCount() == 0 }, "both pods released")
	if got := fx.capture.ids(); len(got) != 0 {
		t.Errorf("capture left: %v", got)
	}
	if _, ok := fx.data.spec("c1"); ok {
		t.Error("data path left")
	}
	for id, n := range fx.refs {
		if n != 0 {
			t.Errorf("identity %s still holds %d references after release", id, n)
		}
	}
}

// A pod whose netns cannot be found is reported by readiness with the
// reason, and retried until it is found.
func TestPendingAndRetry(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	w := fx.tables.set(workload("shop", "web-1", "u1", ipA))
	fx.e.queue.Add(tables.Event{Type: tables.Enrol, Workload: w})
	fx.settle(func() bool {
		p := fx.e.Pending()
		return len(p) == 1 && strings.Contains(p[0], "no pod network namespace")
	}, "pending with the reason")
	fx.found[ipA] = redirect.Found{NetnsPath: fx.netns, Interface: "eth0", Addresses: []netip.Addr{ipA}}
	fx.settle(func() bool { return fx.e.EnrolledCount() == 1 }, "enrolled after retry")
	if p := fx.e.Pending(); len(p) != 0 {
		t.Errorf("pending %v", p)
	}
}

// CNI DEL releases the pod; a DEL for a sandbox this process never saw
// still clears capture state.
func TestCNIDel(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	fx.tables.set(workload("shop", "web-1", "u1"))
	if _, err := fx.add(fx.cniPod("shop", "web-1", "u1", "c1")); err != nil {
		t.Fatal(err)
	}
	if err := fx.e.Del(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := fx.data.spec("c1"); fx.e.EnrolledCount() != 0 || len(fx.capture.ids()) != 0 || ok {
		t.Errorf("after DEL: %d enrolled, capture %v, data path %v", fx.e.EnrolledCount(), fx.capture.ids(), ok)
	}
	if err := fx.e.Del(context.Background(), "stale"); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fx.capture.removed, "stale") {
		t.Errorf("stale sandbox not removed from capture: %v", fx.capture.removed)
	}
}

// A new sandbox of the same pod replaces the old one's capture.
func TestNewSandboxReplaces(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	fx.tables.set(workload("shop", "web-1", "u1"))
	for _, cid := range []string{"c1", "c2"} {
		if _, err := fx.add(fx.cniPod("shop", "web-1", "u1", cid)); err != nil {
			t.Fatal(err)
		}
	}
	if got := fx.capture.ids(); !slices.Equal(got, []string{"c2"}) {
		t.Errorf("capture %v, want only the new sandbox", got)
	}
	if _, ok := fx.data.spec("c1"); ok {
		t.Error("old sandbox's data path still runs")
	}
}

// Recovery obtains the certificates of the captured pods still enrolled
// here before it takes their capture over, adopts them, and removes the
// others' capture.
func TestRecover(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	fx.tables.set(workload("shop", "web-1", "u1", ipA))
	gone := netip.MustParseAddr("10.250.0.9")
	fx.capture.applied["c1"] = redirect.PodNetns{ID: "c1"}
	fx.capture.applied["c9"] = redirect.PodNetns{ID: "c9"}
	recorded := []redirect.PodNetns{{ID: "c1", NetnsPath: fx.netns, Addresses: []netip.Addr{ipA}},
		{ID: "c9", NetnsPath: filepath.Join(t.TempDir(), "cni-gone"), Addresses: []netip.Addr{gone}}}
	tookOver := false
	err := fx.e.Recover(context.Background(), recorded, func(context.Context) ([]redirect.PodNetns, error) {
		fx.mu.Lock()
		defer fx.mu.Unlock()
		if len(fx.prefetch) != 1 || fx.prefetch[0].String() != "spiffe://cluster.local/ns/shop/sa/web" {
			t.Errorf("takeover before the certificate: acquired %v", fx.prefetch)
		}
		tookOver = true
		return recorded[:1], nil
	})
	if err != nil || !tookOver {
		t.Fatalf("Recover: %v (takeover %v)", err, tookOver)
	}
	if got := fx.capture.ids(); !slices.Equal(got, []string{"c1"}) {
		t.Errorf("capture %v, want [c1]", got)
	}
	if s, ok := fx.data.spec("c1"); !ok || s.Workload.Name != "web-1" {
		t.Errorf("recovered data path: %+v %v", s, ok)
	}
	snap := fx.e.Snapshot()
	if len(snap) != 1 || snap[0].Via != "recovered" || snap[0].Pod != "shop/web-1" {
		t.Errorf("snapshot %+v", snap)
	}
	// Releasing it drops the identity's reference.
	if err := fx.e.Del(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if n := fx.refs[spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")]; n != 0 {
		t.Errorf("identity references after release: %d", n)
	}
}

// A pod captured at its CNI ADD is not live in the node's view until its
// address is reported (the watch may lag the kubelet by a second or more).
// A reconcile in that window (a resync, a retry) must keep its capture:
// releasing it let the pod's first connections out in the clear, and the
// pod was captured again only as a running pod. Unlabelling still releases.
func TestCNIAddedPodKeptUntilLive(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	w := fx.tables.set(workload("shop", "web-1", "u1")) // no IP yet
	if ok, err := fx.add(fx.cniPod("shop", "web-1", "u1", "c1")); err != nil || !ok {
		t.Fatalf("add = %v, %v; want enrolled", ok, err)
	}
	// A reconcile of the pod before the tables see its address.
	fx.e.queue.Add(tables.Event{Type: tables.Release, Workload: w})
	fx.settle(func() bool { return fx.idle() }, "reconcile before the pod is live")
	if got := fx.capture.ids(); !slices.Equal(got, []string{"c1"}) || len(fx.capture.removed) != 0 {
		t.Fatalf("capture %v (removed %v) after a reconcile of a pod not live yet, want c1 kept", got, fx.capture.removed)
	}
	if n := fx.e.EnrolledCount(); n != 1 {
		t.Fatalf("%d enrolled, want 1", n)
	}
	// Unlabelling is a decision to leave the mesh: released at once.
	fx.tables.label("shop", false)
	fx.e.queue.Add(tables.Event{Type: tables.Release, Workload: w})
	fx.settle(func() bool { return fx.idle() && fx.e.EnrolledCount() == 0 }, "released on unlabel")
	if !slices.Contains(fx.capture.removed, "c1") {
		t.Fatalf("capture removed %v after the unlabel, want c1", fx.capture.removed)
	}
}

// A daemon whose successor took the node over applies no capture to
// running pods (it would move their sockmap slots back to its own
// listeners, which close when it exits); it retries, and enrols once it
// serves again.
func TestSupersededEnrolsNothing(t *testing.T) {
	fx := newFixture(t)
	var superseded atomic.Bool
	superseded.Store(true)
	fx.e.cfg.Superseded = superseded.Load
	fx.tables.label("shop", true)
	w := fx.tables.set(workload("shop", "web-1", "u1", ipA))
	fx.found[ipA] = redirect.Found{NetnsPath: fx.netns, Interface: "eth0", Addresses: []netip.Addr{ipA}}
	fx.e.queue.Add(tables.Event{Type: tables.Enrol, Workload: w})
	fx.settle(func() bool {
		p := fx.e.Pending()
		return len(p) == 1 && strings.Contains(p[0], "another daemon process")
	}, "pending: superseded")
	if got := fx.capture.ids(); len(got) != 0 {
		t.Fatalf("superseded daemon applied capture %v", got)
	}
	superseded.Store(false)
	fx.settle(func() bool { return fx.e.EnrolledCount() == 1 }, "enrolled once serving")
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestCertificateWaitingOnCA: with the CA not answering, a CNI ADD fails
// within CertWait (before ambit-cni's own deadline) saying which identity's
// certificate waits on the CA, and the daemon logs it at WARN.
func TestCertificateWaitingOnCA(t *testing.T) {
	fx := newFixture(t)
	fx.block = true
	fx.tables.nss["shop"] = true
	fx.tables.pods["shop/web-0"] = workload("shop", "web-0", "u1")
	start := time.Now()
	_, err := fx.add(fx.cniPod("shop", "web-0", "u1", "c1"))
	const want = "certificate for identity spiffe://cluster.local/ns/shop/sa/web is waiting on the CA"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("ADD: %v, want %q with the last error", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("ADD took %v, want about CertWait (200ms)", d)
	}
	if logs := fx.logs.String(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, want) || !strings.Contains(logs, "pod=shop/web-0") {
		t.Errorf("no WARN line naming the identity and the pod:\n%s", logs)
	}
	if ids := fx.capture.ids(); len(ids) != 0 {
		t.Errorf("capture applied without a certificate: %v", ids)
	}
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/dataplane"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/cnimsg"
)

// The enroller's view of its collaborators, so that its logic is tested
// with hand-written fakes; the daemon passes *redirect.Manager,
// *dataplane.Node and *tables.Tables.
type (
	captureAPI interface {
		Apply(ctx context.Context, pod redirect.PodNetns, desired redirect.Config) error
		Check(ctx context.Context, pod redirect.PodNetns, desired redirect.Config) error
		Remove(ctx context.Context, pod redirect.PodNetns) error
	}
	dataplaneAPI interface {
		Set(ctx context.Context, spec dataplane.PodSpec) error
		Remove(ctx context.Context, id string) error
	}
	tablesAPI interface {
		Pod(namespace, name string) (tables.Workload, bool)
		NamespaceEnrolled(ns string) bool
		Lookup(addr netip.Addr) (tables.Workload, bool)
		LocalEnrolled() []tables.Workload
	}
)

// errSuperseded: a successor serves the node; it enrols the pod.
var errSuperseded = errors.New("another daemon process serves this node now")

// enrollerConfig wires an enroller.
type enrollerConfig struct {
	LocalNode   string
	TrustDomain spiffeid.TrustDomain
	Tables      tablesAPI
	Capture     captureAPI
	Data        dataplaneAPI
	// Acquire obtains the pod's certificate before its data path starts and
	// holds a reference to the identity; Release drops it when the pod is
	// released, so a node stops renewing identities it no longer runs (the
	// CA would refuse them anyway).
	Acquire func(ctx context.Context, id spiffeid.ID) error
	Release func(id spiffeid.ID)
	// FindPod finds a running pod's namespace by address (redirect.FindPod
	// on the runtime's netns directory).
	FindPod func(addr netip.Addr) (redirect.Found, error)
	// HostPeer names the host-side peer of a pod interface.
	HostPeer func(ns *os.File, ifname string) (string, error)
	// Synced waits until the tables hold the cluster's state (informers
	// synced) and the policies are loaded.
	Synced func(ctx context.Context) error
	// UnknownPodWait bounds how long a CNI ADD waits for its pod to appear
	// in the tables (the watch may lag the kubelet). Default 5 s.
	UnknownPodWait time.Duration
	// ReleaseGrace is how long a released pod's live connections may drain.
	// Default 5 s.
	ReleaseGrace time.Duration
	// Retry is the delay before a failed reconcile is tried again. Default 1 s.
	Retry time.Duration
	// Resync re-examines every pod at this period. Default 30 s.
	Resync time.Duration
	// NetnsCheck is how often the network namespaces of enrolled pods are
	// checked (one stat each): a pod that left the API keeps its capture
	// until its namespace is gone. Default 2 s.
	NetnsCheck time.Duration
	// StateDir keeps one record per enrolled pod (identity, labels), so a
	// restarted daemon can rebuild the data path of a pod the API server no
	// longer lists but whose sandbox still runs. Optional: without it such
	// a pod keeps its capture with no data path (connections fail, never
	// plaintext).
	StateDir string
	// Superseded reports that another daemon process has taken this node
	// over (its takeover marker): this one then applies no capture to
	// running pods, which would move their sockmap slots back to listeners
	// about to close. Optional.
	Superseded func() bool
	Logger     *slog.Logger
}

// enroller keeps the capture and the data path of this node's pods equal to
// what the tables say: a pod is enrolled when its CNI ADD arrives and it is
// eligible in an enrolled namespace, or when the tables report it enrolled
// while it runs (namespace labelled later, daemon restarted). It is released
// when its namespace is unlabelled or it opts out (the pod still exists and
// is not terminating), or when its sandbox goes (CNI DEL, or its network
// namespace gone). A pod that is terminating, finished or gone from the API
// keeps its capture, data path and certificate until its sandbox goes: its
// app may still be in graceful shutdown, and releasing it would let its next
// connections out in the clear. Work for one pod is serialized by a per-pod
// lock; different pods proceed in parallel.
type enroller struct {
	cfg enrollerConfig
	log *slog.Logger

	mu        sync.Mutex
	pods      map[string]*enrolledPod // pod UID -> what is applied
	byCapture map[string]string       // capture ID -> pod UID
	sandboxes map[string]cnimsg.Pod   // pod UID -> its last CNI ADD (enrolled or not)
	byCID     map[string]string       // container ID -> pod UID, for the ADD's Apply
	failing   map[string]string       // pod UID -> last reconcile error
	dirty     map[string]tables.Workload
	podLocks  map[string]*podLock
	wake      chan struct{}

	enrolls, releases, failures atomic.Int64
}

type enrolledPod struct {
	CaptureID string
	Namespace string
	Name      string
	Spec      dataplane.PodSpec
	Via       string // "cni", "running", "recovered"
	Since     time.Time
	// Netns is the pod's network namespace; its release waits for it to go.
	Netns netnsRef
	// Leaving: the pod is terminating, finished or gone from the API; its
	// capture stays until Netns is gone.
	Leaving bool
	// NoData: recovered without a data path (nothing tells its identity);
	// its captured connections fail until its sandbox goes.
	NoData bool
}

type podLock struct {
	mu   sync.Mutex
	refs int
}

func newEnroller(cfg enrollerConfig) *enroller {
	if cfg.UnknownPodWait == 0 {
		cfg.UnknownPodWait = 5 * time.Second
	}
	if cfg.ReleaseGrace == 0 {
		cfg.ReleaseGrace = 5 * time.Second
	}
	if cfg.Retry == 0 {
		cfg.Retry = time.Second
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.NetnsCheck == 0 {
		cfg.NetnsCheck = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &enroller{cfg: cfg, log: cfg.Logger,
		pods: map[string]*enrolledPod{}, byCapture: map[string]string{}, sandboxes: map[string]cnimsg.Pod{},
		byCID: map[string]string{}, failing: map[string]string{}, dirty: map[string]tables.Workload{},
		podLocks: map[string]*podLock{}, wake: make(chan struct{}, 1)}
}

// lock serializes the work on one pod.
func (e *enroller) lock(uid string) func() {
	e.mu.Lock()
	l := e.podLocks[uid]
	if l == nil {
		l = &podLock{}
		e.podLocks[uid] = l
	}
	l.refs++
	e.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		e.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(e.podLocks, uid)
		}
		e.mu.Unlock()
	}
}

// podKey is the key of a CNI pod: its UID, or namespace/name when the
// runtime passed no UID.
func podKey(p cnimsg.Pod) string {
	if p.UID != "" {
		return p.UID
	}
	return p.Namespace + "/" + p.Name
}

// ---- the CNI side (cniserver.Options.Enrol and cniserver.Capture) ----

// Enrol decides a CNI ADD/CHECK: the pod is captured when it is eligible and
// its namespace is enrolled. The tables must have synced (and policies be
// loaded) first, and the pod must be known: the kubelet only starts
// sandboxes of pods the API server has, so an unknown pod in an enrolled
// namespace means the watch lags, and the ADD fails to be retried rather
// than start the pod uncaptured.
func (e *enroller) Enrol(ctx context.Context, p cnimsg.Pod) (bool, error) {
	e.mu.Lock()
	e.sandboxes[podKey(p)] = p
	e.byCID[p.ContainerID] = podKey(p)
	e.mu.Unlock()
	if err := e.cfg.Synced(ctx); err != nil {
		return false, fmt.Errorf("waiting for the cluster state: %w", err)
	}
	deadline := time.Now().Add(e.cfg.UnknownPodWait)
	for {
		w, ok := e.cfg.Tables.Pod(p.Namespace, p.Name)
		if ok && (p.UID == "" || w.UID == p.UID) {
			return w.Eligible && e.cfg.Tables.NamespaceEnrolled(p.Namespace), nil
		}
		if !e.cfg.Tables.NamespaceEnrolled(p.Namespace) {
			// Whatever the pod turns out to be, its namespace is not in
			// the mesh; if it is labelled later, the pod is enrolled
			// while it runs.
			return false, nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("pod %s/%s (uid %s) is not in the node's view of the cluster yet", p.Namespace, p.Name, p.UID)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Apply enrols the pod of a CNI ADD: capture, certificate, data path, in
// that order, undone if a later step fails (the ADD then fails and the
// runtime retries).
func (e *enroller) Apply(ctx context.Context, pod redirect.PodNetns, desired redirect.Config) error {
	e.mu.Lock()
	uid, ok := e.byCID[pod.ID]
	sb := e.sandboxes[uid]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("container %s: no enrolment decision recorded", pod.ID)
	}
	unlock := e.lock(uid)
	defer unlock()
	w, ok := e.cfg.Tables.Pod(sb.Namespace, sb.Name)
	if !ok {
		return fmt.Errorf("pod %s/%s vanished from the node's view", sb.Namespace, sb.Name)
	}
	if cur := e.current(uid); cur != nil && cur.CaptureID != pod.ID {
		// A new sandbox of the same pod: the old one's capture goes first.
		if err := e.release(ctx, uid, cur); err != nil {
			return err
		}
	}
	return e.enrol(ctx, uid, pod, desired, w, pod.Addresses, "cni")
}

// Check verifies a CNI CHECK against the kernel state.
func (e *enroller) Check(ctx context.Context, pod redirect.PodNetns, desired redirect.Config) error {
	return e.cfg.Capture.Check(ctx, pod, desired)
}

// Remove handles a CNI DEL: the pod's data path and capture go. A sandbox
// this process never enrolled still has its capture state removed (it may
// be a previous process's).
func (e *enroller) Remove(ctx context.Context, pod redirect.PodNetns) error {
	e.mu.Lock()
	uid, ok := e.byCapture[pod.ID]
	if cu, cok := e.byCID[pod.ID]; cok {
		if sb := e.sandboxes[cu]; sb.ContainerID == pod.ID {
			delete(e.sandboxes, cu)
		}
		delete(e.byCID, pod.ID)
	}
	e.mu.Unlock()
	if !ok {
		return e.cfg.Capture.Remove(ctx, pod)
	}
	unlock := e.lock(uid)
	defer unlock()
	if cur := e.current(uid); cur != nil && cur.CaptureID == pod.ID {
		return e.release(ctx, uid, cur)
	}
	return nil
}

// ---- the tables side ----

// OnEnrolment receives the tables' Enrol/Release events; it must not block
// (tables.Options.OnEnrolment), so it only marks the pod for the worker.
func (e *enroller) OnEnrolment(ev tables.Event) {
	e.mark(ev.Workload)
}

func (e *enroller) mark(w tables.Workload) {
	e.mu.Lock()
	e.dirty[w.UID] = w
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run reconciles marked pods until ctx ends; every Resync it marks every
// pod the tables enrol on this node and every pod it has enrolled, and
// every NetnsCheck it releases the pods whose network namespace is gone.
func (e *enroller) Run(ctx context.Context) {
	tick := time.NewTicker(e.cfg.Resync)
	defer tick.Stop()
	nsTick := time.NewTicker(e.cfg.NetnsCheck)
	defer nsTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			e.markAll()
		case <-nsTick.C:
			e.releaseGone(ctx)
			continue
		case <-e.wake:
		}
		e.mu.Lock()
		work := e.dirty
		e.dirty = map[string]tables.Workload{}
		e.mu.Unlock()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for uid, w := range work {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				e.reconcileOne(ctx, uid, w)
			}()
		}
		wg.Wait()
	}
}

// markAll marks every pod the tables enrol here and every enrolled pod.
func (e *enroller) markAll() {
	for _, w := range e.cfg.Tables.LocalEnrolled() {
		e.mark(w)
	}
	e.mu.Lock()
	var ws []tables.Workload
	for uid, p := range e.pods {
		ws = append(ws, tables.Workload{UID: uid, Namespace: p.Namespace, Name: p.Name})
	}
	e.mu.Unlock()
	for _, w := range ws {
		e.mark(w)
	}
}

func (e *enroller) reconcileOne(ctx context.Context, uid string, hint tables.Workload) {
	err := e.reconcile(ctx, uid, hint)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		delete(e.failing, uid)
		return
	}
	if ctx.Err() != nil {
		// Cut short by the stop: the pod stays marked (unless marked again
		// meanwhile) for the next Run instead of waiting for a resync.
		if _, ok := e.dirty[uid]; !ok {
			e.dirty[uid] = hint
		}
		select {
		case e.wake <- struct{}{}:
		default:
		}
		return
	}
	e.failures.Add(1)
	e.failing[uid] = hint.Namespace + "/" + hint.Name + ": " + err.Error()
	e.log.Warn("enrolment: reconcile failed, retrying", "pod", hint.Namespace+"/"+hint.Name, "err", err)
	time.AfterFunc(e.cfg.Retry, func() { e.mark(hint) })
}

// reconcile makes one pod's capture and data path match the tables.
func (e *enroller) reconcile(ctx context.Context, uid string, hint tables.Workload) error {
	unlock := e.lock(uid)
	defer unlock()
	w, ok := e.cfg.Tables.Pod(hint.Namespace, hint.Name)
	same := ok && w.UID == uid && w.Node == e.cfg.LocalNode
	want := same && w.Enrolled
	cur := e.current(uid)
	if cur != nil && cur.NoData {
		// Recovered without an identity: only its sandbox going ends it.
		return e.lingerOrRelease(ctx, uid, cur)
	}
	switch {
	case cur != nil && !want && (!same || w.Terminating):
		// Deleted, finished, or replaced by a new pod of the same name:
		// not a decision to leave the mesh.
		return e.lingerOrRelease(ctx, uid, cur)
	case want && cur != nil:
		// Still enrolled: labels or addresses may have changed (Set is a
		// no-op when nothing did).
		spec, err := e.spec(cur.CaptureID, w, cur.Spec.Addrs)
		if err != nil {
			return err
		}
		if err := e.cfg.Data.Set(ctx, spec); err != nil {
			return err
		}
		e.mu.Lock()
		cur.Spec = spec
		e.mu.Unlock()
		return nil
	case want:
		return e.enrolRunning(ctx, uid, w)
	case cur != nil && w.Eligible && e.cfg.Tables.NamespaceEnrolled(w.Namespace):
		// Captured at its CNI ADD, but not live in the node's view yet
		// (no address reported, or the watch lags the kubelet): it has not
		// left the mesh, and releasing it would let its first connections
		// out in the clear.
		return nil
	case cur != nil:
		return e.release(ctx, uid, cur)
	}
	return nil
}

// enrolRunning enrols a pod that is already running: its namespace is the
// one its CNI ADD reported, or else found by its address.
func (e *enroller) enrolRunning(ctx context.Context, uid string, w tables.Workload) error {
	if e.cfg.Superseded != nil && e.cfg.Superseded() {
		return errSuperseded
	}
	e.mu.Lock()
	sb, known := e.sandboxes[uid]
	e.mu.Unlock()
	var pod redirect.PodNetns
	var gateways []netip.Addr
	if known && sb.NetnsPath != "" && len(sb.IPs) > 0 {
		pod = redirect.PodNetns{ID: sb.ContainerID, NetnsPath: sb.NetnsPath, Interface: sb.Interface, Addresses: sb.IPs}
		gateways = sb.Gateways
	} else {
		if len(w.IPs) == 0 {
			return errors.New("running pod without an address")
		}
		f, err := e.cfg.FindPod(w.IPs[0])
		if err != nil {
			return err
		}
		pod = redirect.PodNetns{ID: "netns-" + filepath.Base(f.NetnsPath), NetnsPath: f.NetnsPath, Interface: f.Interface, Addresses: f.Addresses}
		gateways = f.Gateways
	}
	ns, err := os.Open(pod.NetnsPath)
	if err != nil {
		return fmt.Errorf("pod netns: %w", err)
	}
	defer ns.Close()
	pod.Netns = ns
	desired := probeConfig(gateways)
	if host, err := e.cfg.HostPeer(ns, pod.Interface); err == nil {
		pod.HostInterface = host
	} else if len(desired.ProbeSources) > 0 {
		e.log.Warn("enrolment: no host-side peer found; kubelet probes will be captured", "pod", w.Namespace+"/"+w.Name, "err", err)
		desired.ProbeSources = nil
	}
	return e.enrol(ctx, uid, pod, desired, w, pod.Addresses, "running")
}

// probeConfig is the capture config of a pod whose kubelet probes come from
// its gateways (the node's address on the pod network).
func probeConfig(gateways []netip.Addr) redirect.Config {
	var c redirect.Config
	for _, g := range gateways {
		if len(c.ProbeSources) < 4 && g.IsValid() {
			c.ProbeSources = append(c.ProbeSources, g)
		}
	}
	return c
}

// enrol fetches the certificate, applies capture and starts the data path;
// a failed step undoes the earlier ones. Called with the pod's lock held.
func (e *enroller) enrol(ctx context.Context, uid string, pod redirect.PodNetns, desired redirect.Config, w tables.Workload, addrs []netip.Addr, via string) error {
	spec, err := e.spec(pod.ID, w, addrs)
	if err != nil {
		return err
	}
	// The certificate first: once capture is applied, a running pod's
	// connections are steered to this process, and the time until its data
	// path serves them must not include a round trip to the CA.
	if err := e.cfg.Acquire(ctx, spec.Identity); err != nil {
		return fmt.Errorf("certificate for %s: %w", spec.Identity, err)
	}
	if err := e.cfg.Capture.Apply(ctx, pod, desired); err != nil {
		e.cfg.Release(spec.Identity)
		return fmt.Errorf("apply capture: %w", err)
	}
	if err := e.cfg.Data.Set(ctx, spec); err != nil {
		e.cfg.Release(spec.Identity)
		if rerr := e.cfg.Capture.Remove(context.WithoutCancel(ctx), redirect.PodNetns{ID: pod.ID}); rerr != nil {
			e.log.Error("enrolment: undo capture", "pod", w.Namespace+"/"+w.Name, "err", rerr)
		}
		return fmt.Errorf("data path: %w", err)
	}
	ref := netnsOf(pod)
	e.mu.Lock()
	e.pods[uid] = &enrolledPod{CaptureID: pod.ID, Namespace: w.Namespace, Name: w.Name, Spec: spec, Via: via, Since: time.Now(), Netns: ref}
	e.byCapture[pod.ID] = uid
	delete(e.failing, uid)
	e.mu.Unlock()
	e.writeRecord(podRecord{CaptureID: pod.ID, UID: uid, Namespace: w.Namespace, Name: w.Name,
		ServiceAccount: w.ServiceAccount, Labels: w.Labels.Map(), Addresses: spec.Addrs})
	e.enrolls.Add(1)
	e.log.Info("pod enrolled", "pod", w.Namespace+"/"+w.Name, "identity", spec.Identity.String(), "via", via, "capture", pod.ID, "ips", fmt.Sprint(addrs))
	return nil
}

// release removes capture first (new connections go plaintext at once),
// then stops the data path, letting live connections drain for
// ReleaseGrace. Called with the pod's lock held, only when the pod left
// the mesh on purpose or its sandbox is gone.
func (e *enroller) release(ctx context.Context, uid string, cur *enrolledPod) error {
	if err := e.cfg.Capture.Remove(ctx, redirect.PodNetns{ID: cur.CaptureID}); err != nil {
		return fmt.Errorf("remove capture: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, e.cfg.ReleaseGrace)
	err := e.cfg.Data.Remove(dctx, cur.CaptureID)
	cancel()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		e.log.Warn("enrolment: data path stop", "pod", cur.Namespace+"/"+cur.Name, "err", err)
	}
	e.mu.Lock()
	delete(e.pods, uid)
	delete(e.byCapture, cur.CaptureID)
	e.mu.Unlock()
	e.removeRecord(cur.CaptureID)
	if !cur.NoData {
		e.cfg.Release(cur.Spec.Identity)
	}
	e.releases.Add(1)
	e.log.Info("pod released", "pod", cur.Namespace+"/"+cur.Name, "capture", cur.CaptureID, "leaving", cur.Leaving)
	return nil
}

func (e *enroller) current(uid string) *enrolledPod {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pods[uid]
}

// spec is the data path's view of a pod.
func (e *enroller) spec(captureID string, w tables.Workload, addrs []netip.Addr) (dataplane.PodSpec, error) {
	if len(addrs) == 0 {
		addrs = w.IPs
	}
	return e.specOf(captureID, w.Namespace, w.Name, w.ServiceAccount, w.Labels.Map(), addrs)
}

func (e *enroller) specOf(captureID, ns, name, sa string, labels map[string]string, addrs []netip.Addr) (dataplane.PodSpec, error) {
	id, err := identity.Workload(e.cfg.TrustDomain, ns, sa)
	if err != nil {
		return dataplane.PodSpec{}, fmt.Errorf("identity of %s/%s: %w", ns, name, err)
	}
	return dataplane.PodSpec{PodID: captureID, Identity: id, Addrs: slices.Clone(addrs),
		Workload: authz.Workload{Namespace: ns, Name: name, Labels: labels, Identity: id}}, nil
}

// Pending lists, for readiness, the pods the tables enrol here that have no
// capture and data path yet (at most 10, sorted), with the last error.
func (e *enroller) Pending() []string {
	ws := e.cfg.Tables.LocalEnrolled()
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, w := range ws {
		if _, ok := e.pods[w.UID]; ok {
			continue
		}
		s := w.Namespace + "/" + w.Name
		if f, ok := e.failing[w.UID]; ok {
			s = f
		}
		out = append(out, s)
	}
	sort.Strings(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("and %d more", len(out)-10))
	}
	return out
}

// EnrolledCount is the number of pods with capture and a data path.
func (e *enroller) EnrolledCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.pods)
}

// enrolledView is one enrolled pod in the admin dump.
type enrolledView struct {
	Pod       string    `json:"pod"`
	UID       string    `json:"uid"`
	Capture   string    `json:"capture"`
	Identity  string    `json:"identity"`
	Addresses []string  `json:"addresses"`
	Via       string    `json:"via"`
	Since     time.Time `json:"since"`
	// Leaving: terminating or gone from the API, captured until its
	// sandbox goes.
	Leaving bool `json:"leaving,omitempty"`
	// DataPath is false for a pod recovered without an identity.
	DataPath bool `json:"dataPath"`
}

// Snapshot lists the enrolled pods for /config_dump.
func (e *enroller) Snapshot() []enrolledView {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]enrolledView, 0, len(e.pods))
	for uid, p := range e.pods {
		v := enrolledView{Pod: p.Namespace + "/" + p.Name, UID: uid, Capture: p.CaptureID, Identity: p.Spec.Identity.String(), Via: p.Via, Since: p.Since,
			Leaving: p.Leaving, DataPath: !p.NoData}
		for _, a := range p.Spec.Addrs {
			v.Addresses = append(v.Addresses, a.String())
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	return out
}

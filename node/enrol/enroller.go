package enrol

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
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
	// Capture applies and removes a pod's traffic capture.
	Capture interface {
		Apply(ctx context.Context, pod redirect.PodNetns, desired redirect.Config) error
		Check(ctx context.Context, pod redirect.PodNetns, desired redirect.Config) error
		Remove(ctx context.Context, pod redirect.PodNetns) error
	}
	// DataPath starts, updates and stops a pod's data path.
	DataPath interface {
		Set(ctx context.Context, spec dataplane.PodSpec) error
		Remove(ctx context.Context, id string) error
	}
	// Tables is the node's view of the cluster.
	Tables interface {
		Pod(namespace, name string) (tables.Workload, bool)
		NamespaceEnrolled(ns string) bool
		Lookup(addr netip.Addr) (tables.Workload, bool)
		LocalEnrolled() []tables.Workload
	}
)

// ErrSuperseded: a successor serves the node; it enrols the pod.
var ErrSuperseded = errors.New("another daemon process serves this node now")

// Config wires an Enroller. LocalNode, TrustDomain, Tables, Capture, Data,
// Acquire, Release, FindPod, HostPeer and Synced are required.
type Config struct {
	LocalNode   string
	TrustDomain spiffeid.TrustDomain
	Tables      Tables
	// Queue receives the tables' events (tables.Options.OnEnrolment =
	// Queue.Add). Optional: without it only resyncs find pods to enrol.
	Queue   *Queue
	Capture Capture
	Data    DataPath
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
	// CertWait bounds the wait for a pod's certificate when it is enrolled.
	// Default 15 s, under ambit-cni's 20 s: with the CA down a CNI ADD then
	// fails with "certificate for identity X is waiting on the CA: ..." (the
	// reason the pod's event shows, also logged) instead of the plugin
	// timing out with no answer.
	CertWait time.Duration
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

// Enroller keeps the capture and the data path of this node's pods equal to
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
type Enroller struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	pods      map[string]*enrolledPod // pod UID -> what is applied
	byCapture map[string]string       // capture ID -> pod UID
	sandboxes map[string]cnimsg.Pod   // pod UID -> its last CNI ADD (enrolled or not)
	failing   map[string]string       // pod UID -> last reconcile error
	podLocks  map[string]*podLock
	queue     *Queue

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

// New returns an enroller; Recover, then Run, start it.
func New(cfg Config) *Enroller {
	if cfg.Queue == nil {
		cfg.Queue = NewQueue()
	}
	if cfg.UnknownPodWait == 0 {
		cfg.UnknownPodWait = 5 * time.Second
	}
	if cfg.CertWait == 0 {
		cfg.CertWait = 15 * time.Second
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
	return &Enroller{cfg: cfg, log: cfg.Logger,
		pods: map[string]*enrolledPod{}, byCapture: map[string]string{}, sandboxes: map[string]cnimsg.Pod{},
		failing:  map[string]string{},
		podLocks: map[string]*podLock{}, queue: cfg.Queue}
}

// lock serializes the work on one pod.
func (e *Enroller) lock(uid string) func() {
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

func (e *Enroller) current(uid string) *enrolledPod {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pods[uid]
}

// spec is the data path's view of a pod.
func (e *Enroller) spec(captureID string, w tables.Workload, addrs []netip.Addr) (dataplane.PodSpec, error) {
	if len(addrs) == 0 {
		addrs = w.IPs
	}
	return e.specOf(captureID, w.Namespace, w.Name, w.ServiceAccount, w.Labels.Map(), addrs)
}

func (e *Enroller) specOf(captureID, ns, name, sa string, labels map[string]string, addrs []netip.Addr) (dataplane.PodSpec, error) {
	id, err := identity.Workload(e.cfg.TrustDomain, ns, sa)
	if err != nil {
		return dataplane.PodSpec{}, fmt.Errorf("identity of %s/%s: %w", ns, name, err)
	}
	return dataplane.PodSpec{PodID: captureID, Identity: id, Addrs: slices.Clone(addrs),
		Workload: authz.Workload{Namespace: ns, Name: name, Labels: labels, Identity: id}}, nil
}

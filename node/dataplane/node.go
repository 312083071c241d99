package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/tunnel"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// NodeConfig is what every pod's data path on a node shares. Fields mean
// what they mean in Config.
type NodeConfig struct {
	Capture    Capture             // required
	Router     Router              // required
	Authorizer Authorizer          // required
	SVIDs      identity.SVIDSource // required
	Bundles    x509bundle.Source   // required
	Live       *authz.Live         // optional
	Hooks      tunnel.Hooks        // optional
	Settings   tunnel.Settings     // optional
	// Guard is shared by every pod's HBONE server, so its caps hold per
	// node. Optional: default tunnel.NewGuard with the default caps.
	Guard *tunnel.Guard
	// ReservedPorts: the daemon's admin and metrics ports (see
	// Config.ReservedPorts). Optional.
	ReservedPorts []uint16
	// DialTimeout is optional (default 10 s).
	DialTimeout time.Duration
	// ClusterDomain is optional (default DefaultClusterDomain).
	ClusterDomain string
	// Logger is optional (default slog.Default()).
	Logger *slog.Logger
	// Now is optional (default time.Now).
	Now func() time.Time
	// TunnelSameNode carries connections between two pods of this node
	// through HBONE like any other. By default they take the same-node
	// shortcut: no TLS, no HTTP/2, the destination's policy enforced in
	// this process (docs/performance.md). Optional.
	TunnelSameNode bool
}

// PodSpec is one enrolled pod, as the enrolment layer knows it (its capture
// must already be applied under PodID).
type PodSpec struct {
	PodID    string         // required
	Identity spiffeid.ID    // required
	Addrs    []netip.Addr   // required
	Workload authz.Workload // required: Namespace
}

func (s PodSpec) equal(o PodSpec) bool {
	return s.PodID == o.PodID && s.Identity == o.Identity && slices.Equal(s.Addrs, o.Addrs) &&
		s.Workload.Namespace == o.Workload.Namespace && s.Workload.Name == o.Workload.Name &&
		s.Workload.Identity == o.Workload.Identity && maps.Equal(s.Workload.Labels, o.Workload.Labels)
}

// Node runs the data paths of the enrolled pods of one node, keyed by pod
// ID. Safe for concurrent use; calls for one node are serialized.
type Node struct {
	cfg  NodeConfig
	mu   sync.Mutex
	pods map[string]nodePod
	// byAddr maps each pod address to its data path, for the same-node
	// shortcut; replaced whole under mu, read without it.
	byAddr atomic.Pointer[map[netip.Addr]*Pod]
}

type nodePod struct {
	spec PodSpec
	pod  *Pod
}

// NewNode validates cfg and returns a Node with no pods.
func NewNode(cfg NodeConfig) (*Node, error) {
	if cfg.Capture == nil || cfg.Router == nil || cfg.Authorizer == nil || cfg.SVIDs == nil || cfg.Bundles == nil {
		return nil, fmt.Errorf("%w: NodeConfig needs Capture, Router, Authorizer, SVIDs and Bundles", ErrConfig)
	}
	if cfg.Guard == nil {
		cfg.Guard = tunnel.NewGuard(tunnel.GuardConfig{})
	}
	return &Node{cfg: cfg, pods: map[string]nodePod{}}, nil
}

// Set starts the data path of spec's pod, or restarts it when the spec
// changed (identity, addresses or workload); an unchanged spec changes
// nothing. Restarting drains the old data path until ctx is done.
func (n *Node) Set(ctx context.Context, spec PodSpec) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	old, ok := n.pods[spec.PodID]
	if ok && old.spec.equal(spec) {
		return nil
	}
	spec.Addrs = slices.Clone(spec.Addrs)
	spec.Workload.Labels = maps.Clone(spec.Workload.Labels)
	cfg := Config{
		PodID: spec.PodID, Identity: spec.Identity, Addrs: spec.Addrs, Workload: spec.Workload,
		Capture: n.cfg.Capture, Router: n.cfg.Router, Authorizer: n.cfg.Authorizer,
		SVIDs: n.cfg.SVIDs, Bundles: n.cfg.Bundles, Live: n.cfg.Live, Hooks: n.cfg.Hooks,
		Settings: n.cfg.Settings, DialTimeout: n.cfg.DialTimeout, Logger: n.cfg.Logger, Now: n.cfg.Now,
		Guard: n.cfg.Guard, ReservedPorts: n.cfg.ReservedPorts, ClusterDomain: n.cfg.ClusterDomain,
	}
	if !n.cfg.TunnelSameNode {
		cfg.local = n.lookup
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	var stopErr error
	if ok {
		stopErr = old.pod.Stop(ctx)
		delete(n.pods, spec.PodID)
		n.index()
	}
	p, err := Start(ctx, cfg)
	if err != nil {
		return errors.Join(stopErr, err)
	}
	n.pods[spec.PodID] = nodePod{spec: spec, pod: p}
	n.index()
	return stopErr
}

// Remove stops a pod's data path, draining until ctx is done. Removing an
// unknown pod succeeds.
func (n *Node) Remove(ctx context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	old, ok := n.pods[id]
	if !ok {
		return nil
	}
	delete(n.pods, id)
	n.index()
	return old.pod.Stop(ctx)
}

// index rebuilds byAddr from pods; n.mu is held.
func (n *Node) index() {
	m := make(map[netip.Addr]*Pod, len(n.pods))
	dup := map[netip.Addr]bool{}
	for _, np := range n.pods {
		for _, a := range np.spec.Addrs {
			if _, ok := m[a]; ok {
				dup[a] = true // a deleted pod's address reused while it drains
			}
			m[a] = np.pod
		}
	}
	for a := range dup {
		delete(m, a) // ambiguous: the tunnel finds the pod the network reaches
	}
	n.byAddr.Store(&m)
}

// lookup is the data path serving a pod address of this node, or nil.
func (n *Node) lookup(a netip.Addr) *Pod {
	if m := n.byAddr.Load(); m != nil {
		return (*m)[a.Unmap()]
	}
	return nil
}

// Pod returns the running data path of a pod (nil if none).
func (n *Node) Pod(id string) *Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pods[id].pod
}

// PodIDs lists the pods with a running data path, sorted (readiness, admin).
func (n *Node) PodIDs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Sorted(maps.Keys(n.pods))
}

// quietPeriod is how long a pod's listeners must have accepted nothing
// before Close stops them (see Pod.Quiesce).
const quietPeriod = 300 * time.Millisecond

// maxQuiesce bounds the wait for quiet listeners: without a successor
// (the daemon is deleted, not replaced) connections keep arriving.
const maxQuiesce = 2 * time.Second

// Close stops every pod's data path concurrently: each pod first accepts
// what is queued on its listeners (Quiesce, at most maxQuiesce), then stops
// accepting and drains its live connections until ctx is done.
func (n *Node) Close(ctx context.Context) error {
	n.mu.Lock()
	pods := n.pods
	n.pods = map[string]nodePod{}
	n.index()
	n.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, 0, len(pods))
	var emu sync.Mutex
	for _, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			qctx, cancel := context.WithTimeout(ctx, maxQuiesce)
			p.pod.Quiesce(qctx, quietPeriod)
			cancel()
			if err := p.pod.Stop(ctx); err != nil {
				emu.Lock()
				errs = append(errs, fmt.Errorf("pod %s: %w", p.spec.PodID, err))
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

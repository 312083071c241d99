package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/connections"
	"github.com/ambit-mesh/ambit/node/dataplane"
	"github.com/ambit-mesh/ambit/node/enrol"
	"github.com/ambit-mesh/ambit/node/metrics"
	"github.com/ambit-mesh/ambit/node/policies"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/node/watch"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/cniplugin"
	"github.com/ambit-mesh/ambit/tunnel"
)

// group runs the daemon's components: one that fails stops the daemon.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	wg     sync.WaitGroup
}

// Go runs f(ctx) in a goroutine; an error while ctx lives stops the daemon.
func (g *group) Go(name string, f func(context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(g.ctx); err != nil && g.ctx.Err() == nil {
			g.log.Error("component failed; stopping", "component", name, "err", err)
			g.cancel()
		}
	}()
}

func (g *group) wait() { g.wg.Wait() }

// cniInstall keeps ambit-cni installed on the node while the daemon runs.
// A nil *cniInstall (no CNI directories configured) does nothing.
type cniInstall struct {
	rec    *cniplugin.Reconciler
	cancel context.CancelFunc
	done   chan struct{}
	opts   cniplugin.InstallOptions
}

// keepCNIInstalled starts the CNI reconciler when the CNI directories are
// configured.
func (a *agent) keepCNIInstalled(g *group) (*cniInstall, error) {
	if a.cfg.CNIBinDir == "" || a.cfg.CNIConfDir == "" {
		return nil, nil
	}
	rec, err := newCNIReconciler(a.cfg, a.log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(g.ctx)
	ci := &cniInstall{rec: rec, cancel: cancel, done: make(chan struct{}),
		opts: cniplugin.InstallOptions{BinDir: a.cfg.CNIBinDir, ConfDir: a.cfg.CNIConfDir}}
	g.Go("cni-install", func(context.Context) error { defer close(ci.done); return rec.Run(ctx) })
	return ci, nil
}

// uninstaller stops the reconciler and takes ambit-cni out of the node;
// nil when nothing was installed.
func (ci *cniInstall) uninstaller() func() error {
	if ci == nil {
		return nil
	}
	return func() error {
		ci.cancel()
		<-ci.done
		return cniplugin.Uninstall(ci.opts)
	}
}

// Close releases the reconciler's lock; the installation stays.
func (ci *cniInstall) Close() {
	if ci != nil {
		ci.rec.Close()
	}
}

// view builds the node's view of the cluster: the tables and the watch
// that fills them. The tables' enrolment events go to queue.
func (a *agent) view(queue *enrol.Queue) (*tables.Tables, *watch.Watcher, error) {
	topts := tables.Options{
		TrustDomain: a.td, LocalNode: a.cfg.NodeName,
		NamespaceSelector: a.cfg.NamespaceSelector(), PodOptOutSelector: a.cfg.PodOptOutSelector(),
		OnEnrolment: queue.Add,
		Logger:      a.log,
	}
	if a.cfg.PodNamespace != "" {
		// Nothing in ambit's own namespace is enrolled: the daemons and
		// the CA they need to enrol anything.
		topts.SelfNamespace, topts.SelfSelector = a.cfg.PodNamespace, labels.Everything()
	}
	tbl, err := tables.New(topts)
	if err != nil {
		return nil, nil, err
	}
	w, err := watch.New(watch.Config{Client: a.o.Kube, Handler: tbl, Logger: a.log})
	if err != nil {
		return nil, nil, err
	}
	return tbl, w, nil
}

// identities builds the certificate manager over the CA client.
func (a *agent) identities(bundles *identity.BundleStore, met *metrics.Metrics) (*identity.Manager, error) {
	caNS := a.cfg.PodNamespace
	if caNS == "" {
		caNS = a.cfg.RootNamespace
	}
	caID, err := identity.Workload(a.td, caNS, "ambit-ca")
	if err != nil {
		return nil, err
	}
	client, err := ca.NewClient(ca.ClientConfig{URL: a.cfg.CAAddress, TokenFile: a.cfg.CATokenFile, Bundle: bundles, ServerID: caID,
		FIPS: a.cfg.FIPS})
	if err != nil {
		return nil, err
	}
	return identity.NewManager(identity.ManagerConfig{Provider: identity.CSRProvider{Signer: client}, Bundle: bundles, Logger: a.log, Observer: met})
}

// policy is the authorization engine, the live-connection registry its
// changes re-check, and whether the policy watch has loaded every kind.
type policy struct {
	engine *authz.Engine
	live   *authz.Live
	synced func() error
}

// policy builds the engine and, with a dynamic client, starts the policy
// watch that fills it.
func (a *agent) policy(g *group) (policy, error) {
	engine, err := authz.New(authz.Options{RootNamespace: a.cfg.RootNamespace, Logger: a.log,
		TrustDomain: a.cfg.TrustDomain, TrustDomainAliases: a.cfg.Aliases()})
	if err != nil {
		return policy{}, err
	}
	p := policy{engine: engine, live: authz.NewLive(), synced: func() error { return nil }}
	if a.o.Dynamic == nil {
		return p, nil
	}
	pw, err := policies.New(policies.Config{Dynamic: a.o.Dynamic, Discovery: a.o.Discovery, Engine: engine, Live: p.live,
		RootNamespace: a.cfg.RootNamespace, Istio: a.cfg.IstioPolicies, WriteStatus: true, Logger: a.log})
	if err != nil {
		return policy{}, err
	}
	g.Go("policies", pw.Run)
	p.synced = func() error {
		if st := pw.Status(); !st.Synced {
			return fmt.Errorf("policies not synced: %s", strings.Join(st.Pending, ", "))
		}
		return nil
	}
	a.dump.Register("policy_watch", func() any { return pw.Status() })
	return p, nil
}

// waitSynced waits until the watch has synced and the policies are loaded.
func waitSynced(ctx context.Context, w *watch.Watcher, policiesSynced func() error) error {
	if err := w.WaitForSync(ctx); err != nil {
		return err
	}
	for policiesSynced() != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// dataPath builds the live-connection table and the node's data path.
func (a *agent) dataPath(tbl *tables.Tables, met *metrics.Metrics, ids *identity.Manager, bundles *identity.BundleStore,
	pol policy, capture *redirect.Manager) (*dataplane.Node, error) {
	conns, err := connections.New(connections.Config{Logger: a.log, Registerer: met.Registry(),
		Workload: connections.LocalWorkload(func(ip netip.Addr) (string, bool) {
			w, ok := tbl.Lookup(ip)
			return w.Namespace + "/" + w.Name, ok
		})})
	if err != nil {
		return nil, err
	}
	a.connections = conns.SnapshotAny
	return dataplane.NewNode(dataplane.NodeConfig{Capture: capture, Router: tbl, Authorizer: pol.engine,
		SVIDs: ids, Bundles: bundles, Live: pol.live, Hooks: conns.Hooks(met.NodeHooks()), Logger: a.log,
		ReservedPorts: daemonPorts(a.cfg.MetricsAddr, a.cfg.ReadyAddr, a.cfg.AdminAddr), ClusterDomain: a.cfg.ClusterDomain,
		Settings: tunnel.Settings{FIPS: a.cfg.FIPS},
		Guard: tunnel.NewGuard(tunnel.GuardConfig{MaxHandshakes: a.cfg.HBONEMaxHandshakes,
			MaxStreamsPerIdentity: a.cfg.HBONEMaxStreamsPerIdentity})})
}

// registerReady adds the readiness checks: informers synced, policies
// loaded, every pod to enrol captured, the CNI socket serving.
func (a *agent) registerReady(w *watch.Watcher, pol policy, enr *enrol.Enroller, cniUp *atomic.Bool) {
	a.ready.Register("informers", func() error {
		if p := w.Pending(); len(p) > 0 {
			return fmt.Errorf("not synced: %s", strings.Join(p, ", "))
		}
		return nil
	})
	a.readyNotes = func() []string { return staleNotes(w.Status(), time.Now()) }
	a.ready.Register("policies", pol.synced)
	a.ready.Register("capture", untilPassed(func() error {
		if p := enr.Pending(); len(p) > 0 {
			return fmt.Errorf("pods not yet captured: %s", strings.Join(p, "; "))
		}
		return nil
	}))
	a.ready.Register("cni", func() error {
		if !cniUp.Load() {
			return errors.New("CNI socket not serving yet")
		}
		return nil
	})
}

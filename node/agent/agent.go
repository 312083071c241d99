package agent

import (
	"context"
	"crypto/fips140"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/node/admin"
	"github.com/ambit-mesh/ambit/node/config"
	"github.com/ambit-mesh/ambit/node/enrol"
	"github.com/ambit-mesh/ambit/node/metrics"
	"github.com/ambit-mesh/ambit/node/policies"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/cniserver"
)

// ErrFIPS: --fips was given but the Go runtime is not in FIPS 140 mode.
var ErrFIPS = errors.New("agent: --fips requires the Go runtime in FIPS 140 mode (GODEBUG=fips140=on)")

// Options are the daemon's dependencies; cmd/ambit builds them from the
// environment, tests build them by hand.
type Options struct {
	// Config is the validated configuration (config.Parse). Required.
	Config config.Config
	// Kube is the API client. Required.
	Kube kubernetes.Interface
	// Dynamic reads the policy CRDs (node/policies). Optional: without it no
	// policy is ever loaded (everything is allowed), which only tests want.
	Dynamic dynamic.Interface
	// Discovery tells whether Istio's policy CRDs exist (with
	// Config.IstioPolicies). Required then.
	Discovery policies.Discovery
	// Version is reported in ambit_build_info.
	Version string
	// Level is the level /logging changes. Optional.
	Level *slog.LevelVar
	// Logger is the daemon's log. Optional, default slog.Default().
	Logger *slog.Logger
	// AccessLog receives one JSON line per connection. Optional.
	AccessLog *slog.Logger
	// DrainTimeout bounds how long live connections may finish when the
	// daemon stops (a successor has taken over new connections by then).
	// Optional, default 20 s.
	DrainTimeout time.Duration
	// HandoverTimeout bounds how long a stopping daemon whose DaemonSet
	// still exists keeps serving new connections while it waits for its
	// successor to take the node over (then it drains anyway). Optional,
	// default 8 s. The pod's grace period must cover it plus DrainTimeout.
	HandoverTimeout time.Duration
}

// Run is the node daemon: it returns when ctx ends (after draining) or when
// a part of it fails to start.
func Run(ctx context.Context, o Options) error {
	a, err := newAgent(o)
	if err != nil {
		return err
	}
	return a.run(ctx)
}

type agent struct {
	o     Options
	cfg   config.Config
	log   *slog.Logger
	td    spiffeid.TrustDomain
	ready *admin.Readiness
	dump  *admin.ConfigDump
	// connections serves /connections (the live-connection table).
	connections func() any
	// readyNotes are added to a Ready answer (stale watch).
	readyNotes func() []string
}

func newAgent(o Options) (*agent, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Level == nil {
		o.Level = new(slog.LevelVar)
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 20 * time.Second
	}
	if o.HandoverTimeout == 0 {
		o.HandoverTimeout = 8 * time.Second
	}
	if o.Kube == nil {
		return nil, errors.New("agent: Options.Kube is required")
	}
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Config.FIPS && !fips140.Enabled() {
		return nil, ErrFIPS
	}
	return &agent{o: o, cfg: o.Config, log: o.Logger, td: o.Config.SPIFFETrustDomain(),
		ready: admin.NewReadiness(), dump: admin.NewConfigDump()}, nil
}

// run starts the daemon and serves until stop ends; then it hands over
// (see stopping) and drains. Components run on their own context, which
// outlives stop while the daemon waits for its successor. Each part is
// built after the parts it uses.
func (a *agent) run(stop context.Context) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(stop))
	g := &group{ctx: ctx, cancel: cancel, log: a.log}
	defer g.wait() // last: every component has returned
	defer cancel() // before the wait, on every return
	var serving atomic.Bool
	// Until it serves, a stop aborts the start.
	defer context.AfterFunc(stop, func() {
		if !serving.Load() {
			cancel()
		}
	})()
	cfg := a.cfg

	// Keep ambit-cni installed on the node (first: creating the reconciler
	// clears a stop file an older version's preStop hook may have left).
	cniInstall, err := a.keepCNIInstalled(g)
	if err != nil {
		return err
	}
	defer cniInstall.Close()

	// Trust, the node's view of the cluster, metrics, identities, policy.
	bundles, err := loadBundle(cfg.BundleFile, a.td, cfg.SPIFFEAliases())
	if err != nil {
		return err
	}
	g.Go("bundle", func(ctx context.Context) error { watchBundle(ctx, cfg.BundleFile, bundles, a.log); return nil })
	queue := enrol.NewQueue() // the tables mark the pods the enroller reconciles
	tbl, w, err := a.view(queue)
	if err != nil {
		return err
	}
	met, err := metrics.New(metrics.Config{
		Version: a.o.Version, AccessLog: a.o.AccessLog, Logger: a.log,
		AccessLogFormat: cfg.AccessLogFormat, AccessLogLevel: cfg.AccessLog,
		Workloads:      workloadLabels(tbl, cfg.ClusterDomain),
		ClusterID:      cfg.ClusterID,
		Informers:      func() map[string]bool { return informerMap(w.Status(), false) },
		InformersStale: func() map[string]bool { return informerMap(w.Status(), true) },
	})
	if err != nil {
		return err
	}
	ids, err := a.identities(bundles, met)
	if err != nil {
		return err
	}
	defer ids.Close()
	if err := met.AddCertificates(ids.Snapshot); err != nil {
		return err
	}
	pol, err := a.policy(g)
	if err != nil {
		return err
	}
	a.dump.Register("trust", trustSection(bundles, pol.engine))
	fips := fipsState(cfg.FIPS)
	a.dump.Register("fips", func() any { return fips })
	a.log.Info("TLS profile", "fips", fips.Requested, "fips140_enabled", fips.Enabled, "fips140_enforced", fips.Enforced,
		"module_version", fips.ModuleVersion, "gofips140", fips.BuildSetting)

	// Capture and the data path.
	host, err := openHostNetns(cfg)
	if err != nil {
		return err
	}
	if host != nil {
		defer host.Close()
	}
	capture, err := redirect.New(ctx, redirect.Options{PinDir: cfg.BPFPinDir, StateDir: filepath.Join(filepath.Dir(cfg.CNISocket), "pods"),
		CgroupPath: cfg.CgroupRoot, HostNetns: host, Logger: a.log})
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	defer capture.Close()
	node, err := a.dataPath(tbl, met, ids, bundles, pol, capture)
	if err != nil {
		return err
	}

	// Enrolment.
	synced := func(ctx context.Context) error { return waitSynced(ctx, w, pol.synced) }
	marker := newMarker(cfg.PodName, cfg.CNISocket, time.Now())
	enr := enrol.New(enrol.Config{
		LocalNode: cfg.NodeName, TrustDomain: a.td, Tables: tbl, Queue: queue, Capture: capture, Data: node,
		Acquire:    ids.Acquire,
		Release:    ids.Release,
		FindPod:    func(addr netip.Addr) (redirect.Found, error) { return redirect.FindPod(cfg.NetnsDir, addr) },
		HostPeer:   func(ns *os.File, ifname string) (string, error) { return redirect.HostPeerIn(host, ns, ifname) },
		Synced:     synced,
		StateDir:   filepath.Join(filepath.Dir(cfg.CNISocket), "enrolled"),
		Superseded: marker.superseded,
		Logger:     a.log,
	})
	if err := met.AddEnrolledPods(enr.EnrolledCount); err != nil {
		return err
	}

	// Readiness, /config_dump and the servers, then the watch.
	var cniUp atomic.Bool
	a.registerReady(w, pol, enr, &cniUp)
	a.registerDump(tbl, ids, pol.engine, enr, capture, node)
	if err := a.serve(ctx, g, met, ids); err != nil {
		return err
	}
	g.Go("watch", func(ctx context.Context) error { w.Run(ctx); return nil })

	// Wait for the cluster state and the policies before touching any pod:
	// a data path started before the policies are loaded would allow what
	// they deny. Then take over the pods a predecessor captured, and
	// reconcile.
	if err := synced(ctx); err != nil {
		return err
	}
	recorded, err := capture.BeginTakeover()
	if err != nil {
		return fmt.Errorf("capture state: %w", err)
	}
	if err := enr.Recover(ctx, recorded, capture.Recover); err != nil {
		return err
	}
	g.Go("enrolment", func(ctx context.Context) error { enr.Run(ctx); return nil })

	// New pods: the CNI socket.
	cni, err := cniserver.New(cniserver.Options{SocketPath: cfg.CNISocket, Enroller: enr,
		HostPeer:  func(ns *os.File, ifname string) (string, error) { return redirect.HostPeerIn(host, ns, ifname) },
		HostNetns: host, Logger: a.log})
	if err != nil {
		return err
	}
	a.dump.Register("cni", func() any { return cni.Stats() })
	g.Go("cni", func(ctx context.Context) error { return cni.Serve(ctx) })
	cniUp.Store(true)
	// This process now serves the node: a predecessor still draining
	// stops taking new connections when it reads the marker.
	owner := marker.claim(a.log)
	serving.Store(true)
	a.log.Info("ambit node daemon running", "node", cfg.NodeName, "trust_domain", a.td.String(), "version", a.o.Version)

	select {
	case <-stop.Done():
		a.stopping(owner, marker.self, cniInstall.uninstaller())
	case <-ctx.Done(): // a component failed
	}
	cancel()
	cni.Close()
	a.log.Info("stopping: draining live connections", "timeout", a.o.DrainTimeout.String())
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(stop), a.o.DrainTimeout)
	defer dcancel()
	if err := node.Close(dctx); err != nil {
		a.log.Warn("drain cut connections", "err", err)
	}
	return nil
}

// stopping is the handover of a daemon told to stop. If its DaemonSet
// still exists (pod deleted, evicted, or replaced by a rolling upgrade), a
// successor will take the node over: keep serving new connections and keep
// the CNI entry (pods created meanwhile wait for the successor) until the
// takeover marker names another process or HandoverTimeout passes.
// Otherwise the release is being removed: take ambit-cni out of the node
// (unless CNIKeepOnStop) so no pod waits for a daemon that will not come.
func (a *agent) stopping(owner, self string, uninstallCNI func() error) {
	hctx, cancel := context.WithTimeout(context.Background(), a.o.HandoverTimeout)
	defer cancel()
	start := time.Now()
	if a.successorExpected(hctx) {
		a.log.Info("stopping: serving until a successor takes the node over", "timeout", a.o.HandoverTimeout.String())
		if waitForSuccessor(hctx, owner, self, 100*time.Millisecond) {
			a.log.Info("stopping: taken over by the successor", "after", time.Since(start).String(), "successor", readOwner(owner))
		} else {
			a.log.Warn("stopping: no successor took over in time; draining anyway", "after", time.Since(start).String())
		}
		return
	}
	if uninstallCNI == nil || a.cfg.CNIKeepOnStop {
		return
	}
	if err := uninstallCNI(); err != nil {
		a.log.Error("stopping: removing ambit-cni from the node", "err", err)
		return
	}
	a.log.Info("stopping: the release is being removed; ambit-cni taken out of the node")
}

// serve starts the metrics, readiness and admin servers.
func (a *agent) serve(ctx context.Context, g *group, met *metrics.Metrics, ids *identity.Manager) error {
	adm, err := admin.New(admin.Config{Addr: a.cfg.AdminAddr, Level: a.o.Level, AccessLog: met, ConfigDump: a.dump, Logger: a.log, Registerer: met.Registry(),
		Connections: a.connections})
	if err != nil {
		return err
	}
	a.dump.Register("certificates", admin.CertificatesSection(ids))
	for _, s := range []struct {
		name, addr string
		h          http.Handler
	}{
		{"metrics", a.cfg.MetricsAddr, admin.MetricsHandler(met.Handler())},
		{"ready", a.cfg.ReadyAddr, readyHandler(a.ready, a.readyNotes)},
		{"admin", a.cfg.AdminAddr, adm.Handler()},
	} {
		ln, err := listen(ctx, s.addr)
		if err != nil {
			return fmt.Errorf("%s server: %w", s.name, err)
		}
		g.Go(s.name+"-server", func(ctx context.Context) error { return admin.ServeListener(ctx, ln, s.h, a.log) })
	}
	return nil
}

// daemonPorts are the ports of the daemon's own HTTP listeners (metrics,
// readiness, admin): the HBONE servers refuse CONNECTs to them as loops.
func daemonPorts(addrs ...string) []uint16 {
	var ports []uint16
	for _, a := range addrs {
		if _, p, err := net.SplitHostPort(a); err == nil {
			if n, err := strconv.ParseUint(p, 10, 16); err == nil && n != 0 {
				ports = append(ports, uint16(n))
			}
		}
	}
	return ports
}

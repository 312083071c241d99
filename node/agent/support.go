package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/config"
	"github.com/ambit-mesh/ambit/node/dataplane"
	"github.com/ambit-mesh/ambit/node/enrol"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/node/watch"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/cniplugin"
)

// loadBundle reads the PEM roots of the trust domain; identities of its
// aliases verify against the same roots (the file holds the alias domain's
// roots too when they differ).
func loadBundle(path string, td spiffeid.TrustDomain, aliases []spiffeid.TrustDomain) (*identity.BundleStore, error) {
	roots, err := readRoots(path)
	if err != nil {
		return nil, err
	}
	return identity.NewBundleStore(identity.BundleConfig{TrustDomain: td, Roots: roots, Aliases: aliases})
}

func readRoots(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	roots, err := identity.ParsePEMCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("trust bundle %s: %w", path, err)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("trust bundle %s: no certificate", path)
	}
	return roots, nil
}

// bundleInterval is how often the bundle file is re-read: a ConfigMap
// update reaches the mounted file within the kubelet's sync period (about a
// minute), so a few seconds adds nothing noticeable.
const bundleInterval = 5 * time.Second

// watchBundle re-reads the bundle file and installs changed roots (a root
// rotation adds the new root next to the old one first). An unreadable or
// empty file keeps the current roots: never fail open, never drop trust on a
// half-written file.
func watchBundle(ctx context.Context, path string, store *identity.BundleStore, log *slog.Logger) {
	last, _ := os.ReadFile(path)
	t := time.NewTicker(bundleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(path)
		if err != nil || bytes.Equal(b, last) {
			continue
		}
		roots, err := identity.ParsePEMCertificates(b)
		if err != nil || len(roots) == 0 {
			log.Warn("trust bundle changed but is not usable; keeping the current roots", "file", path, "err", err)
			continue
		}
		if err := store.SetRoots(roots); err != nil {
			log.Warn("trust bundle rejected", "file", path, "err", err)
			continue
		}
		last = b
		log.Info("trust bundle reloaded", "file", path, "roots", len(roots))
	}
}

// openHostNetns opens the node's network namespace file, when configured.
func openHostNetns(cfg config.Config) (*os.File, error) {
	if cfg.HostNetns == "" {
		return nil, nil
	}
	f, err := os.Open(cfg.HostNetns)
	if err != nil {
		return nil, fmt.Errorf("--host-netns: %w", err)
	}
	return f, nil
}

// listen binds a server's address before it is served, so a port in use
// fails the start instead of a goroutine later.
func listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr)
}

// informerMap turns the watch status into {informer: synced} or, with
// stale, {informer: stale} for the metrics collectors.
func informerMap(st watch.Status, stale bool) map[string]bool {
	m := make(map[string]bool, len(st.Informers))
	for _, i := range st.Informers {
		if stale {
			m[i.Name] = i.Stale
		} else {
			m[i.Name] = i.Synced
		}
	}
	return m
}

// registerDump adds the daemon's sections to /config_dump. None holds key
// material: certificates are listed by identity, serial and validity.
func (a *agent) registerDump(tbl *tables.Tables, ids *identity.Manager, engine *authz.Engine, enr *enrol.Enroller, capture *redirect.Manager, node *dataplane.Node) {
	a.dump.Register("config", func() any { return a.cfg })
	a.dump.Register("enrolled", func() any { return enr.Snapshot() })
	a.dump.Register("workloads", func() any { return localWorkloads(tbl) })
	a.dump.Register("tables", func() any { return tbl.Stats() })
	a.dump.Register("policies", func() any { return engine.Stats() })
	a.dump.Register("capture", func() any {
		s, err := capture.State()
		if err != nil {
			return map[string]string{"error": err.Error()}
		}
		return strings.Split(strings.TrimRight(s, "\n"), "\n")
	})
	a.dump.Register("pools", func() any {
		out := map[string]any{}
		for _, id := range node.PodIDs() {
			if p := node.Pod(id); p != nil {
				out[id] = p.Stats()
			}
		}
		return out
	})
}

// workloadView is one pod of this node in the admin dump.
type workloadView struct {
	Namespace      string            `json:"namespace"`
	Name           string            `json:"name"`
	UID            string            `json:"uid"`
	ServiceAccount string            `json:"serviceAccount"`
	IPs            []string          `json:"ips"`
	Labels         map[string]string `json:"labels,omitempty"`
	Enrolled       bool              `json:"enrolled"`
}

func localWorkloads(t *tables.Tables) []workloadView {
	ws := t.LocalEnrolled()
	out := make([]workloadView, 0, len(ws))
	for _, w := range ws {
		v := workloadView{Namespace: w.Namespace, Name: w.Name, UID: w.UID, ServiceAccount: w.ServiceAccount, Labels: w.Labels.Map(), Enrolled: w.Enrolled}
		for _, ip := range w.IPs {
			v.IPs = append(v.IPs, ip.String())
		}
		out = append(out, v)
	}
	return out
}

// cniInterval is how often the CNI installation is checked: an intact pass
// costs tens of microseconds, and another plugin's installer may rewrite
// the conflist without ambit's entry at any time.
const cniInterval = 500 * time.Millisecond

// newCNIReconciler keeps ambit-cni (the binary next to this one) installed
// with the same entry the chart's installer wrote.
func newCNIReconciler(cfg config.Config, log *slog.Logger) (*cniplugin.Reconciler, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return cniplugin.NewReconciler(cniplugin.ReconcilerOptions{
		InstallOptions: cniplugin.InstallOptions{BinDir: cfg.CNIBinDir, ConfDir: cfg.CNIConfDir,
			Binary: filepath.Join(filepath.Dir(exe), "ambit-cni"), SocketPath: cfg.CNISocket, ExcludeNamespaces: cfg.ExcludeNamespaces()},
		Interval: cniInterval, StopFile: cniplugin.DefaultStopFile, Log: log})
}

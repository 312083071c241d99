package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The takeover marker: a file beside the CNI socket naming the daemon
// process that last took the node's capture over (its listeners are in the
// sockmap and its CNI socket serves). A stopping daemon keeps serving until
// the marker names another process: then nothing new reaches it.
const ownerFile = "owner"

// writeOwner records self as the node's serving daemon (atomically).
func writeOwner(path, self string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(self+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readOwner returns the process the marker names ("" if none).
func readOwner(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// waitForSuccessor polls the marker until it names a process other than
// self (true) or ctx ends (false). Without a path it waits for ctx.
func waitForSuccessor(ctx context.Context, path, self string, poll time.Duration) bool {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		if o := readOwner(path); path != "" && o != "" && o != self {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// instanceID names this process: pod, pid and start time, unique on a node.
func instanceID(pod string, now time.Time) string {
	if pod == "" {
		pod = "local"
	}
	return fmt.Sprintf("%s/%d/%d", pod, os.Getpid(), now.UnixNano())
}

func ownerPath(cniSocket string) string { return filepath.Join(filepath.Dir(cniSocket), ownerFile) }

// marker is this process's takeover marker.
type marker struct {
	self, path string
	written    atomic.Bool
}

func newMarker(pod, cniSocket string, now time.Time) *marker {
	return &marker{self: instanceID(pod, now), path: ownerPath(cniSocket)}
}

// superseded reports that another process wrote the marker after this
// one did. Before this process wrote it, it is the newest one.
func (m *marker) superseded() bool { return m.written.Load() && readOwner(m.path) != m.self }

// claim writes the marker naming this process and returns its path for
// the handover; "" when it could not be written: then a stopping
// predecessor waits its full handover timeout, and so does this process,
// not trusting a stale marker.
func (m *marker) claim(log *slog.Logger) string {
	if err := writeOwner(m.path, m.self); err != nil {
		log.Warn("takeover marker not written; a stopping predecessor waits its full handover timeout", "err", err)
		return ""
	}
	m.written.Store(true)
	return m.path
}

// errNoDaemonSet: this daemon runs outside a DaemonSet (no pod name, or a
// pod without a DaemonSet owner).
var errNoDaemonSet = errors.New("not run by a DaemonSet")

// daemonSetLive reports whether this daemon pod's DaemonSet exists and is
// not being deleted: then a successor pod will take the node over (the pod
// was deleted, evicted or replaced by a rolling upgrade), and the CNI entry
// must stay so that pods created meanwhile wait for it instead of starting
// uncaptured. False (with the reason) means the release is going away.
func daemonSetLive(ctx context.Context, kube kubernetes.Interface, namespace, pod string) (bool, error) {
	if pod == "" || namespace == "" {
		return false, errNoDaemonSet
	}
	p, err := kube.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("own pod: %w", err)
	}
	name := ""
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" && strings.HasPrefix(o.APIVersion, "apps/") {
			name = o.Name
		}
	}
	if name == "" {
		return false, errNoDaemonSet
	}
	ds, err := kube.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("daemonset %s: %w", name, err)
	}
	return ds.DeletionTimestamp == nil, nil
}

// successorExpected asks daemonSetLive, retrying for up to about 5 s. When
// the API server cannot answer it returns false: no new pod can be created
// without it, so removing the CNI entry opens no window, while keeping it
// after the release is gone would block every pod on the node.
func (a *agent) successorExpected(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		live, err := daemonSetLive(ctx, a.o.Kube, a.cfg.PodNamespace, a.cfg.PodName)
		// Refused: helm uninstall deleted the daemon's RBAC or service
		// account before stopping it.
		if err == nil || errors.Is(err, errNoDaemonSet) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			a.log.Info("stopping: own DaemonSet checked", "successor_expected", live, "reason", errString(err))
			return live
		}
		select {
		case <-ctx.Done():
			a.log.Warn("stopping: own DaemonSet unknown; treating the release as removed", "err", err)
			return false
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

//go:build linux

package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Options configure Start. The zero value is a working two-node cluster.
type Options struct {
	// Nodes is the number of nodes, 1 or 2. Optional, default 2.
	Nodes int
	// BinDir holds the built binaries (e2e/hack/build-bins.sh). Optional,
	// default $AMBIT_E2E_BIN or <module root>/bin.
	BinDir string
	// BaseDir is where run directories are made. Optional, default
	// <module root>/e2e/.work (git-ignored).
	BaseDir string
	// Logger receives the harness's progress. Optional, default discards.
	Logger *slog.Logger
	// Images are image tarballs imported into every node before its kubelet
	// starts. Optional; more can be imported later with ImportImage.
	Images []string
	// NodePrivateDirs are extra host paths each node gets its own copy of
	// (bind-mounted in the node's mount namespace), e.g. a node daemon's
	// socket directory reached through hostPath. Optional.
	NodePrivateDirs []string
	// NodeNamePrefix names nodes <prefix>1, <prefix>2. Optional, default "node-".
	NodeNamePrefix string
	// NodeCIDR is the network of the host bridge and node addresses; PodCIDR
	// is split into one /24 per node; ServiceCIDR holds ClusterIPs.
	// Optional, defaults 172.31.250.0/24, 10.250.0.0/16, 10.251.0.0/16.
	NodeCIDR, PodCIDR, ServiceCIDR string
	// Timeout bounds the boot, once the machine lock is taken (waiting for
	// another run's cluster is bounded only by Start's ctx). Optional,
	// default 3 minutes.
	Timeout time.Duration
	// NoDNS skips cluster DNS (CoreDNS as kube-dns). Optional, default
	// false: pods resolve <service>.<namespace>.svc.cluster.local.
	NoDNS bool
	// NodeNetnsFile, when set, is a path at which each node's mount
	// namespace shows that node's network namespace (a bind mount of the
	// namespace file), the way /proc/1/ns/net shows the host's on a real
	// node: on this machine /proc/1 is the test machine's, not the node's.
	// A node daemon off the host network is given it (hostPath) to reach the
	// host side of pod interfaces. Optional.
	NodeNetnsFile string
	// Keep leaves the cluster running after the test (Stop is not
	// registered with t.Cleanup); the next Start reaps it. Optional,
	// default: $KEEP is "1".
	Keep bool
}

func (o *Options) defaults() error {
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > 2 {
		return fmt.Errorf("cluster: Nodes must be 1 or 2, not %d", o.Nodes)
	}
	root, rootErr := ModuleRoot()
	if o.BinDir == "" {
		o.BinDir = os.Getenv("AMBIT_E2E_BIN")
	}
	if o.BinDir == "" {
		if rootErr != nil {
			return rootErr
		}
		o.BinDir = filepath.Join(root, "bin")
	}
	if o.BaseDir == "" {
		if rootErr != nil {
			return rootErr
		}
		o.BaseDir = filepath.Join(root, "e2e", ".work")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NodeNamePrefix == "" {
		o.NodeNamePrefix = "node-"
	}
	if o.NodeCIDR == "" {
		o.NodeCIDR = "172.31.250.0/24"
	}
	if o.PodCIDR == "" {
		o.PodCIDR = "10.250.0.0/16"
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = "10.251.0.0/16"
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	if os.Getenv("KEEP") == "1" {
		o.Keep = true
	}
	return nil
}

func parseCIDR(s string) (*net.IPNet, error) {
	ip, n, err := net.ParseCIDR(s)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("cluster: %q is not an IPv4 CIDR: %v", s, err)
	}
	return n, nil
}

// ErrUnavailable means the machine cannot run the cluster (not root, binaries
// not built, a tool missing); the error says what is missing.
var ErrUnavailable = errors.New("e2e cluster unavailable")

// binaries the harness needs in BinDir.
var requiredBins = []string{
	"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
	"cni/bridge", "cni/host-local", "cni/loopback", "kubectl", "helm", "coredns",
}

// hostTools the harness runs from PATH.
var hostTools = []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "nsenter", "unshare", "mount", "go"}

// Check reports, wrapping ErrUnavailable, why this machine cannot run the
// cluster with opts, or nil.
func Check(opts Options) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (namespaces, mounts, cgroups, containerd)")
	}
	for _, b := range requiredBins {
		if st, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, filepath.Join(opts.BinDir, b)+" (run e2e/hack/build-bins.sh)")
		}
	}
	for _, t := range hostTools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t+" (run e2e/hack/install-deps.sh)")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: needs %s", ErrUnavailable, strings.Join(missing, ", "))
	}
	return nil
}

// SkipIfUnavailable skips tb when Check fails, unless $AMBIT_E2E_REQUIRE is
// "1" (CI sets it): then the test fails, so CI never silently skips.
func SkipIfUnavailable(tb testing.TB, opts Options) {
	tb.Helper()
	if err := Check(opts); err != nil {
		if os.Getenv("AMBIT_E2E_REQUIRE") == "1" {
			tb.Fatalf("AMBIT_E2E_REQUIRE=1 but %v", err)
		}
		tb.Skip(err.Error())
	}
}

// ModuleRoot returns the directory of ambit's go.mod, found from the working
// directory upwards.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isAmbitModule(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cluster: not inside the ambit module (no go.mod of github.com/ambit-mesh/ambit above the working directory)")
		}
		dir = parent
	}
}

func isAmbitModule(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if l := strings.TrimSpace(s.Text()); strings.HasPrefix(l, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(l, "module ")) == "github.com/ambit-mesh/ambit"
		}
	}
	return false
}

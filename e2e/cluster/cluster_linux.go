//go:build linux

package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Cluster is a running cluster. Its fields are read-only.
type Cluster struct {
	WorkDir      string  // the run's directory (logs in WorkDir/logs)
	Kubeconfig   string  // admin kubeconfig (system:masters), for kubectl and helm
	APIServerURL string  // https://<host bridge address>:6443
	CAFile       string  // the CA of the API server and every client certificate
	Nodes        []*Node // in order node-1, node-2

	opts        Options
	log         *slog.Logger
	state       runState
	cg          *cgroups
	pki         *pki
	net         *hostNet
	podCIDR     *net.IPNet
	serviceCIDR *net.IPNet
	saKey       string
	saPub       string
	admin       certFiles
	etcdURL     string
	apiserver   *proc
	images      []string
	unlock      func()
	booted      bool

	mu       sync.Mutex
	procs    []*proc
	cs       *kubernetes.Clientset
	stopOnce sync.Once
	stopErr  error
	// stopped and leftAtStop (under mu): Leftovers after Stop.
	stopped    bool
	leftAtStop []string
}

// Start builds and starts a cluster: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, and per node containerd, kubelet
// and kube-proxy, then waits until every node is Ready and the default
// ServiceAccount exists. Only one cluster runs on a machine at a time: Start
// waits for a running one to stop, and first reaps what a crashed run left.
//
// With tb non-nil, Stop is registered with tb.Cleanup (unless opts.Keep) and
// component log tails are logged when the test failed. With tb nil the
// caller must call Stop.
func Start(ctx context.Context, tb testing.TB, opts Options) (*Cluster, error) {
	if err := Check(opts); err != nil {
		return nil, err
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, log: opts.Logger}
	var err error
	if c.podCIDR, err = parseCIDR(opts.PodCIDR); err != nil {
		return nil, err
	}
	if c.serviceCIDR, err = parseCIDR(opts.ServiceCIDR); err != nil {
		return nil, err
	}
	nodeCIDR, err := parseCIDR(opts.NodeCIDR)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.BaseDir, 0o755); err != nil {
		return nil, err
	}
	// Waiting for another run's cluster (another test package, a demo) is
	// bounded by the caller's ctx only; opts.Timeout bounds the boot.
	if c.unlock, err = lockMachine(ctx, opts.BaseDir); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	if err := Reap(ctx, opts.BaseDir, c.log); err != nil {
		c.unlock()
		return nil, fmt.Errorf("reaping a previous run: %w", err)
	}
	if tb != nil && !opts.Keep {
		tb.Cleanup(func() {
			if tb.Failed() && c.booted {
				c.logTails(tb)
			}
			if err := c.Stop(); err != nil {
				tb.Errorf("cluster stop: %v", err)
			}
		})
	}
	t0 := time.Now()
	if err := c.boot(ctx, nodeCIDR); err != nil {
		if tb != nil {
			c.logTails(tb)
		}
		if tb == nil || opts.Keep {
			_ = c.Stop()
		}
		return nil, fmt.Errorf("cluster start: %w", err)
	}
	c.booted = true
	c.log.Info("cluster ready", "nodes", len(c.Nodes), "elapsed", time.Since(t0).Round(time.Millisecond), "kubeconfig", c.Kubeconfig)
	return c, nil
}

func (c *Cluster) boot(ctx context.Context, nodeCIDR *net.IPNet) error {
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	hexID := hex.EncodeToString(id)
	c.WorkDir = filepath.Join(c.opts.BaseDir, "run-"+hexID)
	for _, d := range []string{"logs", "kubeconfig", "ns", "images"} {
		if err := os.MkdirAll(filepath.Join(c.WorkDir, d), 0o755); err != nil {
			return err
		}
	}
	var err error
	if c.cg, err = newCgroups("ambit-e2e-" + hexID); err != nil {
		return err
	}
	c.state = runState{Owner: os.Getpid(), Dir: c.WorkDir, Cgroup: c.cg.name}
	if err := c.saveState(); err != nil {
		return err
	}
	if err := makePrivateDir(filepath.Join(c.WorkDir, "ns")); err != nil {
		return err
	}

	// Credentials.
	if c.pki, err = newPKI(filepath.Join(c.WorkDir, "pki")); err != nil {
		return err
	}
	c.CAFile = c.pki.CAFile
	if c.saKey, c.saPub, err = c.pki.serviceAccountKey(); err != nil {
		return err
	}
	if c.net, err = setupHostNet(ctx, nodeCIDR); err != nil {
		return err
	}
	c.APIServerURL = fmt.Sprintf("https://%s", net.JoinHostPort(c.net.hostIP.String(), fmt.Sprint(APIServerPort)))
	if c.admin, err = c.pki.issue("admin", "ambit-e2e-admin", []string{"system:masters"}, nil, nil, false); err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.WorkDir, "kubeconfig", "admin")
	if err := writeKubeconfig(c.Kubeconfig, c.APIServerURL, c.pki.CAFile, c.admin); err != nil {
		return err
	}

	// The pause (and DNS) images are built while the control plane starts.
	pauseTar := filepath.Join(c.WorkDir, "images", "pause.tar")
	var dnsTar string
	imagesErr := make(chan error, 1)
	go func() {
		err := BuildGoImage(ctx, "./e2e/apps/pause", PauseImage, pauseTar)
		if err == nil && !c.opts.NoDNS {
			dnsTar, err = c.buildDNSImage()
		}
		imagesErr <- err
	}()

	c.log.Info("starting control plane", "dir", c.WorkDir)
	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	if err := c.startAPIServer(ctx); err != nil {
		return err
	}
	if err := c.startControllers(); err != nil {
		return err
	}
	if err := <-imagesErr; err != nil {
		return fmt.Errorf("harness images: %w", err)
	}
	c.images = append([]string{pauseTar}, c.opts.Images...)
	if !c.opts.NoDNS {
		c.images = append(c.images, dnsTar)
		if err := c.deployDNS(ctx); err != nil {
			return err
		}
	}

	for i := 1; i <= c.opts.Nodes; i++ {
		n, err := c.prepareNode(ctx, i)
		if err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
	}
	c.log.Info("starting nodes", "nodes", len(c.Nodes))
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() { errs[i] = c.startNode(ctx, n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := c.wireNodes(ctx); err != nil {
		return err
	}
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	c.log.Info("nodes ready", "nodes", len(c.Nodes))
	if c.opts.NoDNS {
		return nil
	}
	return c.waitDNS(ctx)
}

// wireNodes waits for each node's pod CIDR, then writes its CNI
// configuration and the routes to its pods.
func (c *Cluster) wireNodes(ctx context.Context) error {
	cs := c.Clientset()
	for _, n := range c.Nodes {
		err := waitFor(ctx, n.Name+" pod CIDR", 200*time.Millisecond, c.allProcs(), func(ctx context.Context) error {
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if node.Spec.PodCIDR == "" {
				return errors.New("no pod CIDR yet")
			}
			_, n.PodCIDR, err = net.ParseCIDR(node.Spec.PodCIDR)
			return err
		})
		if err != nil {
			return err
		}
		if err := n.configureCNI(); err != nil {
			return err
		}
		if err := addPodRoute(ctx, c.Nodes, n); err != nil {
			return err
		}
	}
	return nil
}

// waitReady waits for every node to be Ready and for the controller
// manager to have made the default ServiceAccount.
func (c *Cluster) waitReady(ctx context.Context) error {
	cs := c.Clientset()
	err := waitFor(ctx, "nodes Ready", 250*time.Millisecond, c.allProcs(), func(ctx context.Context) error {
		for _, n := range c.Nodes {
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !NodeReady(node) {
				return fmt.Errorf("node %s not Ready", n.Name)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return waitFor(ctx, "default ServiceAccount", 200*time.Millisecond, c.allProcs(), func(ctx context.Context) error {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// NodeReady reports whether node has condition Ready=True.
func NodeReady(node *corev1.Node) bool {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RESTConfig returns a client configuration for the cluster's admin.
func (c *Cluster) RESTConfig() *rest.Config {
	return &rest.Config{
		Host: c.APIServerURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile:   c.pki.CAFile,
			CertFile: c.admin.Cert,
			KeyFile:  c.admin.Key,
		},
		QPS:   50,
		Burst: 100,
	}
}

// Clientset returns the admin's clientset.
func (c *Cluster) Clientset() *kubernetes.Clientset {
	cs, err := c.clientsetErr()
	if err != nil {
		panic(fmt.Sprintf("cluster: clientset: %v", err)) // only a malformed rest.Config fails here
	}
	return cs
}

func (c *Cluster) clientsetErr() (*kubernetes.Clientset, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs != nil {
		return c.cs, nil
	}
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return nil, err
	}
	c.cs = cs
	return cs, nil
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.BinDir, name) }

func (c *Cluster) start(spec procSpec) (*proc, error) {
	spec.outlive = c.opts.Keep
	p, err := startProc(c.log, c.cg, filepath.Join(c.WorkDir, "logs"), spec)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

func (c *Cluster) allProcs() []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*proc(nil), c.procs...)
}

// LogPath returns the log file of a component: "etcd", "kube-apiserver",
// "kube-controller-manager", "kube-scheduler", or "<node>-containerd",
// "<node>-kubelet", "<node>-kube-proxy".
func (c *Cluster) LogPath(component string) string {
	return filepath.Join(c.WorkDir, "logs", component+".log")
}

func (c *Cluster) logTails(tb testing.TB) {
	tb.Helper()
	for _, p := range c.allProcs() {
		tb.Logf("---- %s (%s), last lines:\n%s", p.name, p.logPath, p.tail(15))
	}
}

// Stop kills every process of the cluster (containers included), removes
// its namespaces, mounts, cgroups, links and routes, and its work directory
// except the logs, which move to <BaseDir>/last-logs. It is safe to call
// more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		t0 := time.Now()
		// Graceful first for the kubelets and container runtimes is not
		// needed: nothing outlives the run, so everything is killed.
		c.stopErr = teardown(ctx, c.state, c.opts.BaseDir)
		for _, p := range c.allProcs() {
			<-p.done
		}
		left := c.leftoversNow()
		c.mu.Lock()
		c.stopped, c.leftAtStop = true, left
		c.mu.Unlock()
		if c.unlock != nil {
			c.unlock()
		}
		c.log.Info("cluster stopped", "elapsed", time.Since(t0).Round(time.Millisecond), "err", c.stopErr)
	})
	return c.stopErr
}

// String describes the cluster in one line.
func (c *Cluster) String() string {
	var names []string
	for _, n := range c.Nodes {
		names = append(names, fmt.Sprintf("%s(%s,%v)", n.Name, n.IP, n.PodCIDR))
	}
	return fmt.Sprintf("cluster %s nodes=%s kubeconfig=%s", c.APIServerURL, strings.Join(names, ","), c.Kubeconfig)
}

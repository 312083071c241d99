//go:build linux

package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/e2e/images"
)

// ClusterOptions configure Cluster.
type ClusterOptions struct {
	// Keep leaves the cluster and the demo's workloads running when Cluster
	// returns (`go run ./e2e/cmd/e2e-cluster down` removes them). Optional,
	// default false: everything is torn down.
	Keep bool
	// Logger receives the cluster harness's progress. Optional, default
	// discards.
	Logger *slog.Logger
}

// Names the cluster demo uses.
const (
	ambitNS   = "ambit-system"
	shopNS    = "shop"
	otherNS   = "other"
	clientSA  = "web"
	serverSA  = "echo"
	ambitRef  = "ambit.test/ambit"
	demoTag   = "demo"
	echoRef   = "ambit.test/echo:demo"
	secretTag = "AMBIT-SECRET"
)

var (
	webPrincipal  = "cluster.local/ns/" + shopNS + "/sa/" + clientSA
	echoPrincipal = "cluster.local/ns/" + shopNS + "/sa/" + serverSA
)

// Cluster runs scenarios 1, 2, 5 and 4 of the end-to-end suite on a real
// two-node cluster started on this machine, narrating to w each command as
// a user types it (and running exactly that) and what was observed. It
// returns an error when something expected is not observed. Needs root and
// the binaries of `make cluster-bins` (cluster.Check says what is missing).
func Cluster(ctx context.Context, w io.Writer, opts ClusterOptions) (err error) {
	s := &session{w: w, t0: time.Now()}
	root, err := cluster.ModuleRoot()
	if err != nil {
		return err
	}
	values, err := cluster.AmbitChartValues()
	if err != nil {
		return err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var bootTime atomic.Int64
	copts := cluster.ForAmbit(cluster.Options{
		Logger: slog.New(startWatch{logger.Handler(), &bootTime}),
		Keep:   opts.Keep,
	})
	if err := cluster.Check(copts); err != nil {
		return err
	}

	s.step("0. Build the images and start a Kubernetes cluster on this machine")
	t := time.Now()
	dir, err := os.MkdirTemp("", "ambit-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	built := make(chan error, 1)
	var ambitImg images.Result
	go func() {
		var err error
		ambitImg, err = images.Build(ctx, images.Options{OutDir: dir, Repository: ambitRef, Tag: demoTag})
		built <- err
	}()
	echoTar := filepath.Join(dir, "echo.tar")
	if err := cluster.BuildGoImage(ctx, "./e2e/apps/echo", echoRef, echoTar); err != nil {
		return err
	}
	if err := <-built; err != nil {
		return err
	}
	s.say("images (static Go binaries, no Docker): %s (ambit, ambit-cni) and %s (the demo app), %s", ambitImg.Ref, echoRef, since(t))
	t = time.Now()
	copts.Images = []string{ambitImg.Tar, echoTar}
	c, err := start(ctx, s, copts)
	if err != nil {
		return err
	}
	s.c = c
	defer func() {
		if err != nil && ctx.Err() == nil {
			s.diagnose()
		}
		if opts.Keep {
			s.keepHelp(err)
			return
		}
		s.step("Tear down")
		t := time.Now()
		if serr := c.Stop(); serr != nil {
			err = errors.Join(err, serr)
			return
		}
		if left := c.Leftovers(); len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("left behind: %s", strings.Join(left, ", ")))
			return
		}
		s.say("every process, namespace, mount, cgroup and link of the cluster removed in %s; nothing left behind.", since(t))
		s.say("(KEEP=1 keeps it running to explore: sudo make demo KEEP=1)")
	}()
	took, wait := since(t), ""
	if boot := time.Duration(bootTime.Load()).Round(100 * time.Millisecond); boot > 0 && took-boot > 2*time.Second {
		took, wait = boot, fmt.Sprintf(" (after waiting %s for another cluster on this machine to stop)", took-boot)
	}
	s.say("started in %s%s: etcd, kube-apiserver (%s), kube-controller-manager, kube-scheduler, CoreDNS,", took, wait, c.APIServerURL)
	for _, n := range c.Nodes {
		s.say("  %s (%s, pods %s): its own network and mount namespaces, containerd, kubelet, kube-proxy", n.Name, n.IP, n.PodCIDR)
	}
	if _, err := s.kubectl(ctx, 0, "get", "nodes", "-o", "wide"); err != nil {
		return err
	}

	steps := []func(context.Context) error{
		func(ctx context.Context) error { return s.install(ctx, filepath.Join(root, "charts", "ambit"), values) },
		s.workloads,
		s.label,
		s.metrics,
		s.policy,
	}
	for _, f := range steps {
		if err := f(ctx); err != nil {
			return err
		}
	}
	s.step("Done")
	s.say("What was observed (scenarios 1, 2, 5 and 4 of the end-to-end suite, in %s):", since(s.t0))
	for _, f := range s.facts {
		s.say("  - %s", f)
	}
	return nil
}

// start starts the cluster. One cluster runs on the machine at a time and
// Start gives up waiting for another after its own timeout (3 minutes, which
// also bounds the boot): while the failure is that wait, wait again.
func start(ctx context.Context, s *session, opts cluster.Options) (*cluster.Cluster, error) {
	for {
		c, err := cluster.Start(ctx, nil, opts)
		if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "waiting for another e2e cluster") {
			return c, err
		}
		s.say("(another e2e cluster still runs on this machine; waiting for it)")
	}
}

// diagnose prints, after a failed step, what helps to see why: the pods
// and the tail of each daemon's log.
func (s *session) diagnose() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s.step("The demo failed; the state of the cluster")
	out, _ := s.c.Kubectl(ctx, "get", "pods", "-A", "-o", "wide")
	s.show(out, 0)
	for _, n := range s.c.Nodes {
		d, err := s.daemon(ctx, n.Name)
		if err != nil {
			s.say("%v", err)
			continue
		}
		out, _ := s.c.Kubectl(ctx, "-n", ambitNS, "logs", d.Name, "-c", "ambit", "--tail=30")
		s.say("daemon %s on %s, last lines:", d.Name, n.Name)
		s.show(out, 0)
	}
	s.say("(component logs are kept in e2e/.work/last-logs after the tear-down)")
}

// keepHelp tells how to use and remove a kept cluster.
func (s *session) keepHelp(err error) {
	s.step("The cluster keeps running (KEEP=1)")
	if err != nil {
		s.say("(the demo failed: %v; the cluster is left as it was)", err)
	}
	s.say("Everything above is still there (the echo app, the allow-shop policy). As root, from the repository:")
	s.say("  export KUBECONFIG=%s PATH=$PWD/bin:$PATH", s.c.Kubeconfig)
	s.say("  kubectl get pods -A -o wide")
	s.say("  kubectl -n %s logs -l app.kubernetes.io/name=ambit -c ambit | grep '\"log\":\"access\"'", ambitNS)
	s.say("  kubectl -n %s run try --image=%s --image-pull-policy=Never --restart=Never --overrides='{\"apiVersion\":\"v1\",\"spec\":{\"serviceAccountName\":\"%s\"}}' -- client -target echo.%s:80 -marker hello", shopNS, echoRef, clientSA, shopNS)
	s.say("  kubectl -n %s logs try", shopNS)
	s.say("Tear it down (every process, mount, namespace and cgroup):")
	s.say("  sudo go run ./e2e/cmd/e2e-cluster down")
}

// install is scenario 1: helm install, daemons Ready, ambit-cni chained.
func (s *session) install(ctx context.Context, chart string, values []string) error {
	s.step("1. Install ambit with helm")
	s.say("The image is already on the nodes (imported; a real cluster pulls it). The last four values")
	s.say("point the daemon at this machine's cgroup v2 mount and at where this harness keeps the")
	s.say("network namespaces (a real node needs none of them).")
	args := append(append([]string{"install", "ambit", "charts/ambit", "-n", ambitNS, "--create-namespace",
		"--set", "image.repository=" + ambitRef, "--set", "image.tag=" + demoTag, "--set", "image.pullPolicy=Never"},
		values...), "--wait", "--timeout", "3m")
	s.say("$ helm %s", shellJoin(args))
	args[2] = chart
	t := time.Now()
	out, err := s.c.Helm(ctx, args...)
	if err != nil {
		return err
	}
	s.show(out, 6)
	if _, err := s.c.WaitPods(ctx, ambitNS, "app.kubernetes.io/name=ambit", len(s.c.Nodes), cluster.PodReady); err != nil {
		return err
	}
	took := since(t)
	s.say("(helm install to a Ready daemon on every node: %s)", took)
	if _, err := s.kubectl(ctx, 0, "-n", ambitNS, "get", "pods", "-o", "wide"); err != nil {
		return err
	}
	for _, n := range s.c.Nodes {
		chain, err := cniChain(n.PrivateDir("/etc/cni/net.d"))
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		s.say("%s /etc/cni/net.d: %s", n.Name, chain)
	}
	s.fact("helm install: a Ready daemon on each node in %s, ambit-cni chained into each node's CNI config", took)
	return nil
}

// cniChain describes the node's active conflist: its plugin types, in
// order; it fails unless ambit-cni is chained last.
func cniChain(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".conflist") {
			continue
		}
		var list struct {
			Plugins []struct {
				Type string `json:"type"`
			} `json:"plugins"`
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", err
		}
		if err := json.Unmarshal(b, &list); err != nil {
			return "", fmt.Errorf("%s: %w", e.Name(), err)
		}
		var types []string
		for _, p := range list.Plugins {
			types = append(types, p.Type)
		}
		if len(types) == 0 || types[len(types)-1] != "ambit-cni" {
			return "", fmt.Errorf("%s: plugins %v, want ambit-cni chained last", e.Name(), types)
		}
		return fmt.Sprintf("%s chains %s (ambit-cni installed by the DaemonSet)", e.Name(), strings.Join(types, " -> ")), nil
	}
	return "", fmt.Errorf("no .conflist in %s", dir)
}

// echoApp is the demo's server: the echo app, one pod per node, behind a
// Service; it knows nothing of ambit.
const echoApp = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      serviceAccountName: echo
      affinity:          # one pod per node
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels: {app: echo}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: server
        image: ` + echoRef + `
        imagePullPolicy: Never
        args: [server, -listen, ":8080"]   # answers each line with "<pod> peer=<client addr> got=<line>"
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports:
        - containerPort: 8080
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: shop
spec:
  selector: {app: echo}
  ports:
  - port: 80
    targetPort: 8080
`

// workloads deploys the app in a namespace that is not in the mesh yet.
func (s *session) workloads(ctx context.Context) error {
	s.step("2. An app in namespace shop, not in the mesh yet")
	for _, args := range [][]string{
		{"create", "namespace", shopNS},
		{"-n", shopNS, "create", "serviceaccount", clientSA},
		{"-n", shopNS, "create", "serviceaccount", serverSA},
	} {
		if _, err := s.kubectl(ctx, 0, args...); err != nil {
			return err
		}
	}
	if err := s.apply(ctx, echoApp); err != nil {
		return err
	}
	if _, err := s.kubectl(ctx, 0, "-n", shopNS, "rollout", "status", "deployment/echo", "--timeout=2m"); err != nil {
		return err
	}
	_, err := s.kubectl(ctx, 0, "-n", shopNS, "get", "pods", "-o", "wide")
	return err
}

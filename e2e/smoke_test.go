package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// TestClusterSmoke proves the harness: two real nodes become Ready, a
// Deployment of the echo app runs one pod per node, client pods reach a pod
// on the same node (over cni0) and on the other node (routed between the
// nodes' pod CIDRs) and are seen with their own pod address, a Service
// works by ClusterIP (kube-proxy) and by name (CoreDNS), a pod reaches the API
// server through the kubernetes Service, ServiceAccount tokens from the
// TokenRequest API pass TokenReview, kubectl and helm work, and Stop leaves
// nothing behind.
func TestClusterSmoke(t *testing.T) {
	opts := cluster.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	cluster.SkipIfUnavailable(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // includes waiting for another package's cluster
	defer cancel()

	echoTar := filepath.Join(t.TempDir(), "echo.tar")
	if err := cluster.BuildGoImage(ctx, "./e2e/apps/echo", echoImage, echoTar); err != nil {
		t.Fatal(err)
	}
	opts.Images = []string{echoTar}
	t0 := time.Now()
	c, err := cluster.Start(ctx, t, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster start: %s (%s)", time.Since(t0).Round(time.Millisecond), c)
	cs := c.Clientset()

	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 2 {
		t.Fatalf("%d nodes registered, want 2", len(nodes.Items))
	}
	for i := range nodes.Items {
		if !cluster.NodeReady(&nodes.Items[i]) {
			t.Errorf("node %s not Ready", nodes.Items[i].Name)
		}
	}
	if c.Nodes[0].PodCIDR.String() == c.Nodes[1].PodCIDR.String() {
		t.Fatalf("both nodes have pod CIDR %v", c.Nodes[0].PodCIDR)
	}

	ns := "e2e-smoke"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, echoDeployment(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	servers, err := c.WaitPods(ctx, ns, "app=echo", 2, cluster.PodReady)
	if err != nil {
		t.Fatal(err)
	}
	if servers[0].Spec.NodeName == servers[1].Spec.NodeName {
		t.Fatalf("both echo pods on %s; anti-affinity should spread them", servers[0].Spec.NodeName)
	}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitService(ctx, ns, svc.Name, 2); err != nil {
		t.Fatal(err)
	}

	// Clients on node-1: one to each server pod (same node and across), one
	// to the Service.
	type probe struct {
		name, target, wantServer string
		connectOnly              bool
	}
	var probes []probe
	for _, s := range servers {
		where := "cross"
		if s.Spec.NodeName == c.Nodes[0].Name {
			where = "same"
		}
		probes = append(probes, probe{name: "client-" + where, target: s.Status.PodIP + ":8080", wantServer: s.Name})
	}
	probes = append(probes,
		probe{name: "client-svc", target: svc.Spec.ClusterIP + ":80"},
		// Cluster DNS (CoreDNS) resolves the Service name.
		probe{name: "client-dns", target: "echo." + ns + ".svc.cluster.local:80"},
		// A pod reaches the API server through the kubernetes Service, as the
		// node daemon and the CA will.
		probe{name: "client-api", target: "kubernetes.default.svc:443", connectOnly: true},
	)
	// Without ambit, traffic between the nodes is plaintext on node-1's
	// eth0; same-node traffic never reaches eth0.
	capture, err := c.Nodes[0].StartCapture(ctx, "eth0", "tcp port 8080")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probes {
		marker := "AMBIT-MARKER-" + p.name
		pod := clientPod(p.name, c.Nodes[0].Name, p.target, marker)
		if p.connectOnly {
			pod.Spec.Containers[0].Args = append(pod.Spec.Containers[0].Args, "-connect-only")
		}
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range probes {
		done, err := c.WaitPods(ctx, ns, "probe="+p.name, 1, cluster.PodDone)
		if err != nil {
			t.Fatal(err)
		}
		client := done[0]
		logs, err := c.PodLogs(ctx, ns, client.Name, "client")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s -> %s: %s", p.name, p.target, strings.TrimSpace(logs))
		if client.Status.Phase != corev1.PodSucceeded {
			t.Errorf("%s: %s; logs:\n%s", p.name, cluster.DescribePod(&client), logs)
			continue
		}
		if !strings.Contains(logs, "done ok=3 fail=0") {
			t.Errorf("%s: want 3 successful attempts, logs:\n%s", p.name, logs)
		}
		if !p.connectOnly && !strings.Contains(logs, "got=AMBIT-MARKER-"+p.name) {
			t.Errorf("%s: the server did not echo the marker, logs:\n%s", p.name, logs)
		}
		// Pod-to-pod traffic is routed without NAT: the server sees the
		// client pod's own address.
		if p.wantServer != "" && !strings.Contains(logs, fmt.Sprintf("ok %s peer=%s:", p.wantServer, client.Status.PodIP)) {
			t.Errorf("%s: want an answer from %s seeing peer %s, logs:\n%s", p.name, p.wantServer, client.Status.PodIP, logs)
		}
	}

	wire, err := capture.Stop(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(wire, "AMBIT-MARKER-client-cross") {
		t.Errorf("capture on node-1 eth0 lacks the cross-node marker:\n%.2000s", wire)
	}
	if strings.Contains(wire, "AMBIT-MARKER-client-same") {
		t.Error("capture on node-1 eth0 shows same-node traffic")
	}

	checkTokenReview(ctx, t, c, ns)
	checkTools(ctx, t, c, ns)
	checkNodeDaemonSet(ctx, t, c, ns)

	// Nothing may be left running or mounted. (Stop is idempotent; the
	// t.Cleanup registered by Start then has nothing to do.)
	if os.Getenv("KEEP") == "1" {
		t.Logf("KEEP=1: cluster left running; KUBECONFIG=%s", c.Kubeconfig)
		return
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("left behind after Stop: %v", left)
	}
}

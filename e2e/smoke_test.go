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

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

const echoImage = "ambit.test/echo:e2e"

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
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
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
	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("left behind after Stop: %v", left)
	}
}

// checkTokenReview creates ServiceAccount tokens with the TokenRequest API
// and checks TokenReview accepts them for their audience only.
func checkTokenReview(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string) {
	cs := c.Clientset()
	sa, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "e2e-identity"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const aud = "ambit-e2e-ca"
	ttl := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa.Name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{aud}, ExpirationSeconds: &ttl},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := tr.Status.Token
	if token == "" {
		t.Fatal("TokenRequest returned an empty token")
	}
	review := func(tok string, auds []string) *authnv1.TokenReviewStatus {
		t.Helper()
		r, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
			Spec: authnv1.TokenReviewSpec{Token: tok, Audiences: auds},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return &r.Status
	}
	st := review(token, []string{aud})
	wantUser := "system:serviceaccount:" + ns + ":e2e-identity"
	if !st.Authenticated || st.User.Username != wantUser {
		t.Errorf("TokenReview: authenticated=%v user=%q error=%q; want %q", st.Authenticated, st.User.Username, st.Error, wantUser)
	}
	if len(st.Audiences) != 1 || st.Audiences[0] != aud {
		t.Errorf("TokenReview audiences %v, want [%s]", st.Audiences, aud)
	}
	if st.User.UID != string(sa.UID) {
		t.Errorf("TokenReview uid %q, want the ServiceAccount's %q", st.User.UID, sa.UID)
	}
	if st := review(token, []string{"someone-else"}); st.Authenticated {
		t.Error("TokenReview accepted the token for another audience")
	}
	tampered := token[:len(token)-4] + flip(token[len(token)-4:])
	if st := review(tampered, []string{aud}); st.Authenticated {
		t.Error("TokenReview accepted a token with a modified signature")
	}
	t.Logf("TokenReview: %s authenticated for %v", st.User.Username, st.Audiences)
}

// checkTools proves kubectl and helm work against the cluster: kubectl
// lists both nodes; helm installs a chart whose ConfigMap then exists with
// the value set on the command line, and uninstalls it.
func checkTools(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string) {
	out, err := c.Kubectl(ctx, "get", "nodes", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "node/node-1") || !strings.Contains(out, "node/node-2") {
		t.Errorf("kubectl get nodes: %q", out)
	}
	chart := t.TempDir()
	files := map[string]string{
		"Chart.yaml":            "apiVersion: v2\nname: smoke\nversion: 0.1.0\n",
		"values.yaml":           "marker: default\n",
		"templates/marker.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-marker\ndata:\n  marker: {{ .Values.marker | quote }}\n",
	}
	for name, body := range files {
		p := filepath.Join(chart, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Helm(ctx, "install", "smoke", chart, "-n", ns, "--set", "marker=from-helm", "--wait"); err != nil {
		t.Fatal(err)
	}
	cm, err := c.Clientset().CoreV1().ConfigMaps(ns).Get(ctx, "smoke-marker", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ConfigMap of the helm release: %v", err)
	}
	if cm.Data["marker"] != "from-helm" {
		t.Errorf("helm release ConfigMap data %v, want marker=from-helm", cm.Data)
	}
	if _, err := c.Helm(ctx, "uninstall", "smoke", "-n", ns, "--wait"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Clientset().CoreV1().ConfigMaps(ns).Get(ctx, "smoke-marker", metav1.GetOptions{}); err == nil {
		t.Error("ConfigMap still exists after helm uninstall")
	}
}

// checkNodeDaemonSet runs a DaemonSet shaped like ambit's node daemon
// (hostNetwork, the capabilities it needs, the CNI configuration directory
// through hostPath) and checks that each pod runs with its node's address
// and sees its own node's CNI configuration, not the other node's.
func checkNodeDaemonSet(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string) {
	labels := map[string]string{"app": "node-view"}
	hostPathType := corev1.HostPathDirectory
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "node-view"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork: true,
					DNSPolicy:   corev1.DNSClusterFirstWithHostNet,
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name:            "view",
						Image:           echoImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"files", "/host/etc/cni/net.d/10-ambit-e2e.conflist"},
						SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{
							Add: []corev1.Capability{"NET_ADMIN", "SYS_ADMIN", "NET_RAW", "BPF"},
						}},
						VolumeMounts: []corev1.VolumeMount{{Name: "cni-conf", MountPath: "/host/etc/cni/net.d", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "cni-conf", VolumeSource: corev1.VolumeSource{
						HostPath: &corev1.HostPathVolumeSource{Path: "/etc/cni/net.d", Type: &hostPathType},
					}}},
				},
			},
		},
	}
	if _, err := c.Clientset().AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods, err := c.WaitPods(ctx, ns, "app=node-view", len(c.Nodes), cluster.PodReady)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		var pod *corev1.Pod
		for i := range pods {
			if pods[i].Spec.NodeName == n.Name {
				pod = &pods[i]
			}
		}
		if pod == nil {
			t.Errorf("no node-view pod on %s", n.Name)
			continue
		}
		if pod.Status.PodIP != n.IP.String() {
			t.Errorf("hostNetwork pod on %s has IP %s, want the node's %s", n.Name, pod.Status.PodIP, n.IP)
		}
		var logs string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if logs, err = c.PodLogs(ctx, ns, pod.Name, "view"); err == nil && strings.Contains(logs, "subnet") {
				break
			}
		}
		if !strings.Contains(logs, `"subnet": "`+n.PodCIDR.String()+`"`) {
			t.Errorf("pod on %s sees a CNI configuration without its node's subnet %s:\n%s", n.Name, n.PodCIDR, logs)
		}
	}
}

func flip(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}

func echoDeployment() *appsv1.Deployment {
	labels := map[string]string{"app": "echo"}
	replicas := int32(2)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
							TopologyKey:   "kubernetes.io/hostname",
						}},
					}},
					Containers: []corev1.Container{{
						Name:            "server",
						Image:           echoImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"server", "-listen", ":8080"},
						Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"},
						}}},
						Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

func clientPod(name, node, target, marker string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"probe": name}},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name:            "client",
				Image:           echoImage,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"client", "-target", target, "-marker", marker, "-count", "3", "-interval", "200ms"},
			}},
		},
	}
}

// testWriter sends the harness's log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

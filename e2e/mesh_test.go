package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/e2e/images"
)

// Names of TestMesh's workloads.
const (
	meshNS    = "shop"    // the namespace that is labelled into the mesh
	plainNS   = "outside" // never labelled
	clientSA  = "web"     // clients' service account in meshNS
	echoSA    = "echo"    // the echo server's
	meshLabel = "ambit.dev/mesh"
)

// TestMesh is the end-to-end proof in a real two-node cluster: the chart
// installed by helm, the node daemon running as a DaemonSet pod on each node,
// and the scenarios of issue 6 in order, each a subtest that builds on the
// state the previous one left:
//
//  1. install: helm install; the daemons become Ready; ambit-cni is chained
//     into each node's conflist.
//  2. label: pods of an unlabelled namespace talk plaintext; labelling the
//     namespace enrols its running pods without a restart, and new
//     connections (same node, across nodes, through the Service) are carried
//     with both SPIFFE identities in the daemons' access logs, only port
//     15008 on the wire and never the app's marker; the same-node one puts
//     no packet on the bridge at all (the daemon's same-node shortcut).
//  5. metrics: each node daemon's /metrics shows those connections with both
//     identities.
//  3. strict: PeerAuthentication STRICT refuses a client from an unlabelled
//     namespace while kubelet probes keep the server Ready.
//  4. policy: AuthorizationPolicy DENY by principal, then ALLOW by namespace
//     and port, each taking effect on new and on live connections.
//  7. upgrade: helm upgrade to a new image tag while a client opens
//     connections continuously: none refused, and a long-lived connection
//     lives on through the old daemon's drain.
//  8. ca-down: the CA is scaled to zero for longer than a renewal period
//     (certificates live 3 minutes here, renewed after 90 s); connections
//     keep working on the certificates held, and renewal resumes when it
//     is back.
//  6. unlabel: pods go back to plaintext without restarting.
//
// They run in that order (6 last, since it leaves the mesh).
func TestMesh(t *testing.T) {
	opts := cluster.ForAmbit(cluster.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	cluster.SkipIfUnavailable(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	m, r := startMesh(ctx, t, opts)
	dir, ambitImage, chart := r.dir, r.image, r.chart

	steps := []struct {
		name string
		run  func(*mesh, context.Context, *testing.T)
	}{
		{"1-install", func(m *mesh, ctx context.Context, t *testing.T) { m.install(ctx, t, chart, ambitImage) }},
		{"2-label", (*mesh).labelEnrols},
		{"5-metrics", (*mesh).metricsShowIdentities},
		{"3-strict", (*mesh).strictRefusesPlaintext},
		{"4-policy", (*mesh).policiesOnNewAndLive},
		{"7-upgrade", func(m *mesh, ctx context.Context, t *testing.T) { m.upgrade(ctx, t, chart, dir) }},
		{"8-ca-down", (*mesh).caDown},
		{"6-unlabel", (*mesh).unlabelReleases},
	}
	for _, s := range steps {
		ok := t.Run(s.name, func(t *testing.T) {
			m.t = t
			s.run(m, ctx, t)
		})
		m.t = t
		if !ok {
			m.dumpDaemons(ctx)
			t.FailNow()
		}
	}
}

// install is scenario 1.
func (m *mesh) install(ctx context.Context, t *testing.T, chart string, image func() (images.Result, error)) {
	img, err := image()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.c.ImportImage(ctx, img.Tar); err != nil {
		t.Fatal(err)
	}
	values, err := cluster.AmbitChartValues()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	out, err := m.c.Helm(ctx, append(append([]string{"install", "ambit", chart, "-n", chartNamespace, "--create-namespace",
		"--set", "image.repository=" + chartImage, "--set", "image.tag=e2e", "--set", "image.pullPolicy=Never",
		"--set", "ca.devRootDays=2", "--set", "logLevel=debug", "--set", "ca.certTTL=3m"}, values...),
		"--wait", "--timeout", "3m")...)
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	pods, err := m.c.WaitPods(ctx, chartNamespace, "app.kubernetes.io/name=ambit", len(m.c.Nodes), cluster.PodReady)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helm install to every daemon Ready: %s", time.Since(t0).Round(time.Millisecond))
	for _, n := range m.c.Nodes {
		entry, err := chainedEntry(n.PrivateDir("/etc/cni/net.d"))
		if err != nil {
			t.Errorf("%s: %v", n.Name, err)
			continue
		}
		if entry["socketPath"] != "/var/run/ambit/cni.sock" {
			t.Errorf("%s: ambit-cni entry %v", n.Name, entry)
		}
	}
	for _, p := range pods {
		code, body := m.ready(ctx, p)
		if code != 200 {
			t.Errorf("daemon %s readiness %d: %s", p.Name, code, body)
		}
	}
	// Workloads: an echo Deployment (one pod per node) behind a Service, in a
	// namespace not yet in the mesh; a namespace that stays outside.
	cs := m.c.Clientset()
	for _, ns := range []string{meshNS, plainNS} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, sa := range []string{clientSA, echoSA} {
		if _, err := cs.CoreV1().ServiceAccounts(meshNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	d := echoDeployment()
	d.Spec.Template.Spec.ServiceAccountName = echoSA
	if _, err := cs.AppsV1().Deployments(meshNS).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(meshNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.c.WaitPods(ctx, meshNS, "app=echo", 2, cluster.PodReady); err != nil {
		t.Fatal(err)
	}
	if _, err := m.c.WaitService(ctx, meshNS, "echo", 2); err != nil {
		t.Fatal(err)
	}
}

// echoPods returns the echo pods: the one on node-1 and the one on node-2.
func (m *mesh) echoPods(ctx context.Context) (same, cross corev1.Pod) {
	m.t.Helper()
	pods, err := m.c.WaitPods(ctx, meshNS, "app=echo", 2, cluster.PodReady)
	if err != nil {
		m.t.Fatal(err)
	}
	for _, p := range pods {
		if p.Spec.NodeName == m.c.Nodes[0].Name {
			same = p
		} else {
			cross = p
		}
	}
	if same.Name == "" || cross.Name == "" {
		m.t.Fatalf("echo pods not spread over both nodes")
	}
	return same, cross
}

// probe is one client connection of a scenario.
type probe struct{ name, target string }

func (m *mesh) probes(ctx context.Context) []probe {
	same, cross := m.echoPods(ctx)
	return []probe{
		{"same", same.Status.PodIP + ":8080"},
		{"cross", cross.Status.PodIP + ":8080"},
		{"svc", "echo." + meshNS + ".svc.cluster.local:80"},
	}
}

// labelEnrols is scenario 2.
func (m *mesh) labelEnrols(ctx context.Context, t *testing.T) {
	cs := m.c.Clientset()
	before, _ := m.echoPods(ctx)
	node1 := m.c.Nodes[0].Name

	// Unlabelled: plaintext, the server sees the client pod's own address.
	for _, p := range m.probes(ctx) {
		r := m.client(ctx, meshNS, "plain-"+p.name, node1, clientSA, "-target", p.target, "-marker", "PLAIN-"+p.name, "-count", "1")
		if r.OK() != 1 || !strings.Contains(r.Logs, "peer="+r.IP+":") {
			t.Fatalf("plaintext %s: want one answer naming the client %s as peer:\n%s", p.name, r.IP, r.Logs)
		}
	}

	t0 := time.Now()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"enabled"}}}`, meshLabel)
	if _, err := cs.CoreV1().Namespaces().Patch(ctx, meshNS, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// Both echo pods are enrolled while running: each daemon says so.
	eventually(ctx, t, 30*time.Second, func() string {
		for _, n := range m.c.Nodes {
			d := m.daemonPod(ctx, n.Name)
			if v := metricSum(m.scrape(ctx, d), "ambit_enrolled_pods", nil); v < 1 {
				return fmt.Sprintf("daemon on %s reports %v enrolled pods", n.Name, v)
			}
		}
		return ""
	})
	t.Logf("namespace label to both running echo pods enrolled: %s", time.Since(t0).Round(time.Millisecond))

	// Captures on node-1: the pod bridge (same-node traffic) and eth0 (across).
	var caps []*cluster.Capture
	for _, iface := range []string{"cni0", "eth0"} {
		cp, err := m.c.Nodes[0].StartCapture(ctx, iface, "tcp")
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, cp)
	}
	clientIPs := map[string]string{}
	for _, p := range m.probes(ctx) {
		r := m.client(ctx, meshNS, "mesh-"+p.name, node1, clientSA, "-target", p.target, "-marker", "AMBIT-MARKER-"+p.name, "-count", "1")
		if r.OK() != 1 {
			t.Fatalf("meshed %s: want one answer:\n%s", p.name, r.Logs)
		}
		clientIPs[p.name] = r.IP
	}
	var wire []string
	for _, cp := range caps {
		text, err := cp.Stop(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wire = append(wire, text)
	}
	for i, text := range wire {
		if strings.Contains(text, "AMBIT-MARKER") {
			t.Errorf("capture %d shows the app's marker in plaintext:\n%s", i, text)
		}
	}
	// Between the client pods and the echo pods only port 15008 is used.
	same, cross := m.echoPods(ctx)
	for name, ip := range clientIPs {
		for _, dst := range []string{same.Status.PodIP, cross.Status.PodIP} {
			for _, text := range wire {
				for _, l := range strings.Split(text, "\n") {
					if strings.Contains(l, ip+".") && strings.Contains(l, dst+".") && !strings.Contains(l, ".15008") {
						t.Errorf("%s: packet between client %s and echo %s not on 15008: %s", name, ip, dst, l)
					}
				}
			}
		}
	}
	if !strings.Contains(strings.Join(wire, "\n"), ".15008") {
		t.Errorf("no packet to 15008 captured:\n%s", strings.Join(wire, "\n"))
	}
	// Same node: the daemon joins the two pods' legs itself (the same-node
	// shortcut, docs/performance.md), so nothing between them is on the
	// bridge at all, not even HBONE.
	for _, l := range strings.Split(wire[0], "\n") {
		if ip := clientIPs["same"]; strings.Contains(l, ip+".") && strings.Contains(l, same.Status.PodIP+".") {
			t.Errorf("same-node connection left the pods (client %s, echo %s): %s", ip, same.Status.PodIP, l)
		}
	}

	// Both daemons' access logs: the echo side saw the client's identity.
	wantSrc := "cluster.local/ns/" + meshNS + "/sa/" + clientSA
	wantDst := "cluster.local/ns/" + meshNS + "/sa/" + echoSA
	for _, echo := range []corev1.Pod{same, cross} {
		d := m.daemonPod(ctx, echo.Spec.NodeName)
		found := false
		for _, a := range accessLog(m.daemonLogs(ctx, d.Name)) {
			if a.str("direction") == "inbound" && a.str("source_principal") == wantSrc && a.str("destination_principal") == wantDst {
				found = true
			}
		}
		if !found {
			t.Errorf("daemon %s (node of %s) has no inbound access line from %s to %s:\n%s", d.Name, echo.Name, wantSrc, wantDst, m.daemonLogs(ctx, d.Name))
		}
	}
	// The pods were not restarted.
	after, _ := m.echoPods(ctx)
	if after.UID != before.UID || restarts(after) != 0 {
		t.Errorf("echo pod replaced or restarted (uid %s -> %s, restarts %d)", before.UID, after.UID, restarts(after))
	}
}

func restarts(p corev1.Pod) int32 {
	var n int32
	for _, s := range p.Status.ContainerStatuses {
		n += s.RestartCount
	}
	return n
}

// metricsShowIdentities is scenario 5.
func (m *mesh) metricsShowIdentities(ctx context.Context, t *testing.T) {
	for _, n := range m.c.Nodes {
		d := m.daemonPod(ctx, n.Name)
		text := m.scrape(ctx, d)
		want := map[string]string{"reporter": "destination", "source_principal": "cluster.local/ns/" + meshNS + "/sa/" + clientSA,
			"destination_principal": "cluster.local/ns/" + meshNS + "/sa/" + echoSA, "connection_security_policy": "mutual_tls"}
		if v := metricSum(text, "ambit_tcp_connections_opened_total", want); v < 1 {
			t.Errorf("daemon on %s: no opened connection with both identities %v:\n%s", n.Name, want, grepLines(text, "ambit_tcp_connections"))
		}
	}
	d := m.daemonPod(ctx, m.c.Nodes[0].Name)
	text := m.scrape(ctx, d)
	if v := metricSum(text, "ambit_tcp_connections_opened_total", map[string]string{"reporter": "source", "source_principal": "cluster.local/ns/" + meshNS + "/sa/" + clientSA}); v < 3 {
		t.Errorf("node-1 daemon: %v outbound connections from the client identity, want >= 3", v)
	}
	if v := metricSum(text, "ambit_build_info", nil); v != 1 {
		t.Errorf("ambit_build_info = %v", v)
	}
	// Istio's standard metrics, as ztunnel reports them: the connection
	// the client made to echo.<ns>.svc.cluster.local:80 names the Service
	// (resolved from the VIP it dialled), on the client's daemon and, from
	// the forwarded host, on the server's.
	svc := map[string]string{"destination_service": "echo." + meshNS + ".svc.cluster.local",
		"destination_service_name": "echo", "destination_service_namespace": meshNS,
		"source_principal":           "spiffe://cluster.local/ns/" + meshNS + "/sa/" + clientSA,
		"destination_principal":      "spiffe://cluster.local/ns/" + meshNS + "/sa/" + echoSA,
		"connection_security_policy": "mutual_tls", "request_protocol": "tcp", "destination_cluster": "Kubernetes"}
	src := map[string]string{"reporter": "source"}
	for k, v := range svc {
		src[k] = v
	}
	if v := metricSum(text, "istio_tcp_connections_opened_total", src); v < 1 {
		t.Errorf("node-1 daemon: no istio_tcp_connections_opened_total %v:\n%s", src, grepLines(text, "istio_tcp_connections_opened"))
	}
	dst := map[string]string{"reporter": "destination"}
	for k, v := range svc {
		dst[k] = v
	}
	var all string
	for _, n := range m.c.Nodes {
		all += m.scrape(ctx, m.daemonPod(ctx, n.Name))
	}
	if v := metricSum(all, "istio_tcp_connections_opened_total", dst); v < 1 {
		t.Errorf("no daemon reports the Service connection as its destination %v:\n%s", dst, grepLines(all, "istio_tcp_connections_opened"))
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// unlabelReleases is scenario 6.
func (m *mesh) unlabelReleases(ctx context.Context, t *testing.T) {
	cs := m.c.Clientset()
	before, _ := m.echoPods(ctx)
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, meshLabel)
	if _, err := cs.CoreV1().Namespaces().Patch(ctx, meshNS, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(ctx, t, 30*time.Second, func() string {
		for _, n := range m.c.Nodes {
			d := m.daemonPod(ctx, n.Name)
			if v := metricSum(m.scrape(ctx, d), "ambit_enrolled_pods", nil); v != 0 {
				return fmt.Sprintf("daemon on %s still reports %v enrolled pods", n.Name, v)
			}
		}
		return ""
	})
	cp, err := m.c.Nodes[0].StartCapture(ctx, "eth0", "tcp port 8080")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.probes(ctx) {
		r := m.client(ctx, meshNS, "back-"+p.name, m.c.Nodes[0].Name, clientSA, "-target", p.target, "-marker", "BACK-"+p.name, "-count", "1")
		if r.OK() != 1 || !strings.Contains(r.Logs, "peer="+r.IP+":") {
			t.Errorf("after unlabel %s: want a plaintext answer naming the client %s:\n%s", p.name, r.IP, r.Logs)
		}
	}
	text, err := cp.Stop(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "BACK-cross") {
		t.Errorf("the cross-node connection is not plaintext on port 8080 any more:\n%s", text)
	}
	after, _ := m.echoPods(ctx)
	if after.UID != before.UID || restarts(after) != 0 {
		t.Errorf("echo pod replaced or restarted")
	}
}

// dumpDaemons logs each daemon's log tail, for a failed scenario.
func (m *mesh) dumpDaemons(ctx context.Context) {
	out, _ := m.c.Kubectl(context.WithoutCancel(ctx), "get", "pods", "-A", "-o", "wide")
	m.t.Logf("pods:\n%s", out)
	logs, _ := m.c.Kubectl(context.WithoutCancel(ctx), "logs", "-n", chartNamespace, "-l", "app.kubernetes.io/name=ambit", "--tail=60", "--all-containers", "--prefix")
	m.t.Logf("daemon logs:\n%s", logs)
}

// meshRig is what startMesh prepared besides the cluster.
type meshRig struct {
	dir   string                        // the test's temporary directory
	image func() (images.Result, error) // the ambit image, built in the background
	chart string                        // charts/ambit
}

// startMesh builds the ambit and echo images and starts the two-node
// cluster with the echo image imported: the common start of TestMesh and
// TestLifecycle.
func startMesh(ctx context.Context, t *testing.T, opts cluster.Options) (*mesh, meshRig) {
	t.Helper()
	dir := t.TempDir()
	image := buildChartImage(ctx, dir)
	echoTar := filepath.Join(dir, "echo.tar")
	if err := cluster.BuildGoImage(ctx, "./e2e/apps/echo", echoImage, echoTar); err != nil {
		t.Fatal(err)
	}
	opts.Images = []string{echoTar}
	c, err := cluster.Start(ctx, t, opts)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := cluster.ModuleRoot()
	return &mesh{t: t, c: c}, meshRig{dir: dir, image: image, chart: filepath.Join(root, "charts", "ambit")}
}

package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// BenchmarkMesh measures the speed figures of issue 6 on the real two-node
// cluster, with ambit installed by its chart as TestMesh installs it:
//
//   - cluster_start_s: cluster.Start's own boot time with the binaries of
//     bin/ already built (the "cluster ready ... elapsed" of its log), and
//     cluster_start_wait_s the whole Start call (it also waits for the
//     machine's cluster lock and reaps a crashed run's leftovers);
//   - helm_install_s: helm install --wait to every daemon Ready;
//   - label_to_hbone_ms: from the namespace label (the PATCH sent) to the
//     first connection ambit carried, seen by a client pod of that
//     namespace on node-1 that starts a new connection every 20 ms (each on
//     its own, 2 s timeout) to an echo pod on node-2: the end of the first
//     exchange whose peer address, as the server saw it, is the echo pod's
//     own (ambit's inbound dial);
//     label_to_hbone_log_ms is the same from the destination daemon's
//     access log (the "start" of its first inbound line with the client's
//     principal; reported when the line is there within 15 s),
//     label_fail_conns the client's connections that failed after the label
//     (one that hangs through the switch times out) (resolution: the 20 ms
//     interval);
//   - the same client and server pods' traffic unlabelled ("plain") and
//     labelled ("mesh"), same node ("same": both on node-1) and across
//     nodes ("cross"): rr_p50_us / rr_p99_us, 1 KiB request/response on one
//     connection (5,000 after 100 warm-up); connect_p50_us / connect_p99_us,
//     a new connection per 1 KiB exchange (dial + exchange + close, 1,000
//     after 100); bulk_up_MBps / bulk_down_MBps, the median of three
//     256 MiB single-stream transfers client to server and back
//     (MB = 10^6 bytes). Each is measured by one run of the echo app's
//     bench client (e2e/apps/echo, client -bench) in a pod; every result
//     line is checked to have been carried as intended (plain: the server
//     saw the client pod's address; mesh: the echo pod's own).
//
// The logging of the daemon is the chart's default (info, access log on);
// unlike TestMesh the certificates keep the chart's default lifetime, so no
// renewal falls into a measurement.
//
// Everything is measured once per run, whatever b.N is (the cluster takes
// minutes to start): run it with -benchtime 1x, as `make bench-e2e` does.
// ns/op is then the whole run. `go test` without -bench never runs it.
// Figures from a 2-core machine shared with other work are noisy: the load
// average is logged with each phase.
func BenchmarkMesh(b *testing.B) {
	boot := &bootTime{}
	opts := cluster.ForAmbit(cluster.Options{
		Logger: slog.New(boot.wrap(slog.NewTextHandler(testWriter{b}, nil))),
	})
	cluster.SkipIfUnavailable(b, opts)
	if b.N > 1 {
		b.Logf("b.N = %d: measured once all the same (use -benchtime 1x)", b.N)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	r := &benchRun{b: b, fig: map[string]float64{}}

	dir := b.TempDir()
	ambitImage := buildChartImage(ctx, dir)
	echoTar := filepath.Join(dir, "echo.tar")
	if err := cluster.BuildGoImage(ctx, "./e2e/apps/echo", echoImage, echoTar); err != nil {
		b.Fatal(err)
	}
	opts.Images = []string{echoTar}
	r.load("before cluster start")
	t0 := time.Now()
	c, err := cluster.Start(ctx, b, opts)
	if err != nil {
		b.Fatal(err)
	}
	r.c = c
	r.fig["cluster_start_wait_s"] = time.Since(t0).Seconds()
	r.fig["cluster_start_s"] = boot.get().Seconds()

	img, err := ambitImage()
	if err != nil {
		b.Fatal(err)
	}
	if err := c.ImportImage(ctx, img.Tar); err != nil {
		b.Fatal(err)
	}
	root, _ := cluster.ModuleRoot()
	values, err := cluster.AmbitChartValues()
	if err != nil {
		b.Fatal(err)
	}
	t0 = time.Now()
	out, err := c.Helm(ctx, append(append([]string{"install", "ambit", filepath.Join(root, "charts", "ambit"), "-n", chartNamespace, "--create-namespace",
		"--set", "image.repository=" + chartImage, "--set", "image.tag=e2e", "--set", "image.pullPolicy=Never",
		"--set", "ca.devRootDays=2"}, values...),
		"--wait", "--timeout", "3m")...)
	if err != nil {
		b.Fatalf("helm install: %v\n%s", err, out)
	}
	if _, err := c.WaitPods(ctx, chartNamespace, "app.kubernetes.io/name=ambit", len(c.Nodes), cluster.PodReady); err != nil {
		b.Fatal(err)
	}
	r.fig["helm_install_s"] = time.Since(t0).Seconds()

	r.startSampler(ctx)
	srv := r.workloads(ctx, benchNS)
	plainSrv := r.workloads(ctx, benchPlainNS)
	node1 := c.Nodes[0].Name

	r.load("label")
	r.labelToHBONE(ctx, node1, srv[1])

	// Alternating rounds: plain then mesh, mesh then plain, ... Each round
	// measures both places in both states, so the machine's drift falls on
	// both alike.
	rounds := benchRounds()
	for round := 1; round <= rounds; round++ {
		states := []string{"plain", "mesh"}
		if round%2 == 0 {
			states = []string{"mesh", "plain"}
		}
		for _, state := range states {
			pods := srv
			ns := benchNS
			if state == "plain" {
				pods, ns = plainSrv, benchPlainNS
			}
			for i, place := range []string{"same", "cross"} {
				r.load(fmt.Sprintf("round %d %s %s", round, state, place))
				r.measure(ctx, round, ns, state, place, node1, pods[i].Status.PodIP)
			}
		}
	}
	r.load("end")
	r.stopSampler()
	if err := r.writeJSON(os.Getenv("BENCH_OUT")); err != nil {
		b.Error(err)
	}

	for k, v := range r.fig {
		b.ReportMetric(v, k)
	}
	b.Log(r.table())
}

// Names of BenchmarkMesh's workloads (its own, apart from TestMesh's).
const (
	benchNS       = "bench"       // labelled (mesh) in the label phase
	benchPlainNS  = "bench-plain" // never labelled
	benchClientSA = "bench-client"
	benchEchoSA   = "bench-echo"
	benchPort     = 8081
)

// benchRun is the state of one BenchmarkMesh run.
type benchRun struct {
	b     *testing.B
	c     *cluster.Cluster
	fig   map[string]float64
	loads []string
	pods  int

	rounds  []roundFig // one per measured (round, state, place)
	sampler *daemonSampler
}

// load records the load average at the start of a phase.
func (r *benchRun) load(phase string) {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		l := fmt.Sprintf("%-22s load %s %s %s at %s", phase, f[0], f[1], f[2], time.Now().UTC().Format("15:04:05"))
		r.loads = append(r.loads, l)
		r.b.Log(l)
	}
}

// workloads makes the unlabelled namespace, its service accounts and one
// echo server (echo and bench ports) pinned to each node, and returns the
// servers in node order.
func (r *benchRun) workloads(ctx context.Context, ns string) []corev1.Pod {
	b, cs := r.b, r.c.Clientset()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	for _, sa := range []string{benchClientSA, benchEchoSA} {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for i, n := range r.c.Nodes {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("echo-%d", i+1), Labels: map[string]string{"app": "bench-echo"}},
			Spec: corev1.PodSpec{
				NodeName:                      n.Name,
				ServiceAccountName:            benchEchoSA,
				TerminationGracePeriodSeconds: new(int64),
				Containers: []corev1.Container{{
					Name: "server", Image: echoImage, ImagePullPolicy: corev1.PullNever,
					Args:  []string{"server", "-listen", ":8080", "-bench-listen", fmt.Sprintf(":%d", benchPort)},
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: benchPort}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(benchPort)}},
						PeriodSeconds: 1,
					},
				}},
			},
		}
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	pods, err := r.c.WaitPods(ctx, ns, "app=bench-echo", len(r.c.Nodes), cluster.PodReady)
	if err != nil {
		b.Fatal(err)
	}
	byNode := make([]corev1.Pod, len(r.c.Nodes))
	for _, p := range pods {
		for i, n := range r.c.Nodes {
			if p.Spec.NodeName == n.Name {
				byNode[i] = p
			}
		}
	}
	return byNode
}

// startClient creates an echo client pod on node and returns its name.
func (r *benchRun) startClient(ctx context.Context, ns, node string, args ...string) string {
	r.pods++
	name := fmt.Sprintf("bench-client-%d", r.pods)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			ServiceAccountName:            benchClientSA,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "client", Image: echoImage, ImagePullPolicy: corev1.PullNever,
				Args: append([]string{"client"}, args...),
			}},
		},
	}
	if _, err := r.c.Clientset().CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		r.b.Fatal(err)
	}
	return name
}

// waitClient waits for a client pod to finish, returns its IP and log, and
// deletes it; a failed client fails the benchmark.
func (r *benchRun) waitClient(ctx context.Context, ns, name string) (ip, logs string) {
	cs := r.c.Clientset()
	defer cs.CoreV1().Pods(ns).Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	for {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			r.b.Fatalf("client %s: %v", name, err)
		}
		ip = p.Status.PodIP
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			logs, err = r.c.PodLogs(ctx, ns, name, "client")
			if err != nil {
				r.b.Fatal(err)
			}
			if p.Status.Phase == corev1.PodFailed {
				r.b.Fatalf("client %s failed:\n%s", name, logs)
			}
			return ip, logs
		}
		select {
		case <-ctx.Done():
			logs, _ = r.c.PodLogs(context.WithoutCancel(ctx), ns, name, "client")
			r.b.Fatalf("client %s did not finish: %v\n%s", name, ctx.Err(), logs)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// measure runs the rr, connect and bulk benches from node to the echo pod at
// ip (a client pod in namespace ns) and records the round's figures under
// <figure>_<state>_<place>, with the daemons' CPU and RSS meanwhile.
func (r *benchRun) measure(ctx context.Context, round int, ns, state, place, node, ip string) {
	name := r.startClient(ctx, ns, node, "-bench", "rr,connect,bulk,bulk-down", "-target", fmt.Sprintf("%s:%d", ip, benchPort),
		"-size", "1024", "-bytes", strconv.Itoa(benchBulkBytes), "-timeout", "10s")
	stopProfile := r.profile(ctx, round, state, place)
	clientIP, logs := r.waitClient(ctx, ns, name)
	stopProfile()
	res := benchLines(logs)
	if len(res) != 4 {
		r.b.Fatalf("%s %s: want 4 result lines:\n%s", state, place, logs)
	}
	for _, kv := range res {
		host := kv["peer"]
		if i := strings.LastIndex(host, ":"); i >= 0 {
			host = host[:i]
		}
		want := clientIP // plaintext: the server sees the client pod
		if state == "mesh" {
			want = ip // carried by ambit: its inbound dial from the pod's own address
		}
		if host != want {
			r.b.Errorf("%s %s %s: server saw peer %s, want %s (client %s):\n%s", state, place, kv["mode"], kv["peer"], want, clientIP, logs)
		}
	}
	fig := map[string]float64{}
	for _, kv := range res[:2] {
		for _, q := range []string{"p50", "p99"} {
			fig[kv["mode"]+"_"+q+"_us"] = benchNum(r.b, kv, q+"_us")
		}
	}
	for _, kv := range res[2:] {
		fig["bulk_"+kv["dir"]+"_MBps"] = benchNum(r.b, kv, "MBps_median")
	}
	// The daemons' CPU while each mode ran, per unit of work.
	cpu := func(kv map[string]string) float64 {
		return r.cpuBetween(benchMillis(r.b, kv, "start_ms"), benchMillis(r.b, kv, "end_ms"))
	}
	fig["daemon_cpu_s_rr"] = cpu(res[0])
	fig["daemon_cpu_per_1000rps"] = fig["daemon_cpu_s_rr"] / float64(benchRRCount+benchWarmup) * 1000
	fig["daemon_cpu_s_connect"] = cpu(res[1])
	fig["daemon_cpu_ms_per_connect"] = fig["daemon_cpu_s_connect"] / float64(benchConnCount+benchWarmup) * 1000
	fig["daemon_cpu_s_bulk"] = cpu(res[2]) + cpu(res[3])
	fig["daemon_cpu_s_per_gb"] = fig["daemon_cpu_s_bulk"] / (2 * benchBulkRuns * benchBulkBytes / 1e9)
	fig["daemon_rss_mib_max"] = r.rssMaxBetween(benchMillis(r.b, res[0], "start_ms"), benchMillis(r.b, res[3], "end_ms"))
	r.record(round, state, place, fig)
	r.b.Logf("round %d %s %s:\n%s", round, state, place, strings.TrimSpace(logs))
}

// labelToHBONE labels the namespace while a client on node connects to
// echo every 20 ms, and records how long until ambit carried a connection.
func (r *benchRun) labelToHBONE(ctx context.Context, node string, echo corev1.Pod) {
	b, cs := r.b, r.c.Clientset()
	name := r.startClient(ctx, benchNS, node, "-bench", "watch", "-target", fmt.Sprintf("%s:%d", echo.Status.PodIP, benchPort),
		"-interval", "20ms", "-timeout", "2s", "-duration", "2m", "-until-peer", echo.Status.PodIP)
	// The client runs and has seen the plaintext peer (its own address).
	deadline := time.Now().Add(time.Minute)
	for {
		logs, _ := r.c.PodLogs(ctx, benchNS, name, "client")
		if strings.Contains(logs, "watch at=") {
			if !strings.Contains(logs, " peer=") || strings.Contains(logs, " peer="+echo.Status.PodIP+":") {
				b.Fatalf("watch client before the label: want a plaintext answer first:\n%s", logs)
			}
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("watch client did not start:\n%s", logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	tLabel := time.Now()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"enabled"}}}`, "ambit.dev/mesh")
	if _, err := cs.CoreV1().Namespaces().Patch(ctx, benchNS, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		b.Fatal(err)
	}
	_, logs := r.waitClient(ctx, benchNS, name)
	b.Logf("label sent at=%d; watch client:\n%s", tLabel.UnixMilli(), strings.TrimSpace(logs))
	// Lines "watch at=<start ms> ms=<took> peer=<addr>|fail=<error>": the
	// first answer carried by ambit is the earliest-ending one from the echo
	// pod's own address; failures ending after the label are the switch's.
	var at float64
	fails := 0
	for _, l := range strings.Split(logs, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || f[0] != "watch" {
			continue
		}
		start, _ := strconv.ParseFloat(strings.TrimPrefix(f[1], "at="), 64)
		took, _ := strconv.ParseFloat(strings.TrimPrefix(f[2], "ms="), 64)
		end := start + took
		if end < float64(tLabel.UnixMilli()) {
			continue
		}
		if strings.HasPrefix(f[3], "fail=") {
			fails++
		} else if strings.HasPrefix(f[3], "peer="+echo.Status.PodIP+":") && (at == 0 || end < at) {
			at = end
		}
	}
	if at == 0 {
		b.Fatalf("no answer carried by ambit after the label:\n%s", logs)
	}
	r.fig["label_to_hbone_ms"] = at - float64(tLabel.UnixMicro())/1000
	r.fig["label_fail_conns"] = float64(fails)

	// The destination daemon's access log: the first inbound connection from
	// the client's identity.
	principal := "cluster.local/ns/" + benchNS + "/sa/" + benchClientSA
	daemons, err := cs.CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=ambit", FieldSelector: "spec.nodeName=" + echo.Spec.NodeName})
	if err != nil || len(daemons.Items) != 1 {
		b.Fatalf("daemon of %s: %v (%d pods)", echo.Spec.NodeName, err, len(daemons.Items))
	}
	// The line is written when the connection ends; poll for it a while.
	var first time.Time
	var seen []string
	for deadline := time.Now().Add(15 * time.Second); first.IsZero() && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		dlogs, err := r.c.PodLogs(ctx, chartNamespace, daemons.Items[0].Name, "ambit")
		if err != nil {
			b.Fatal(err)
		}
		seen = seen[:0]
		for _, a := range accessLog(dlogs) {
			seen = append(seen, fmt.Sprintf("%v %v->%v start=%v", a["direction"], a["source_principal"], a["destination_addr"], a["start"]))
			if a["direction"] != "inbound" || a["source_principal"] != principal {
				continue
			}
			s, _ := a["start"].(string)
			if ts, err := time.Parse(time.RFC3339Nano, s); err == nil && (first.IsZero() || ts.Before(first)) {
				first = ts
			}
		}
	}
	if first.IsZero() {
		// Not an error: the client saw the carried connection (peer address)
		// already; this second view of it is only reported when present.
		b.Logf("daemon %s: no inbound access line from %s yet; %d access lines:\n%s", daemons.Items[0].Name, principal, len(seen), strings.Join(seen, "\n"))
		return
	}
	r.fig["label_to_hbone_log_ms"] = float64(first.Sub(tLabel).Microseconds()) / 1000
}

// table formats the figures for the log: plain and mesh side by side.
func (r *benchRun) table() string {
	var sb strings.Builder
	f := r.fig
	fmt.Fprintf(&sb, "\nBenchmarkMesh figures (%s, 2 nodes on one machine; medians of %d alternating rounds)\n", time.Now().UTC().Format(time.RFC3339), benchRounds())
	fmt.Fprintf(&sb, "  cluster start (binaries cached)  %8.1f s   (Start call incl. lock wait and reap: %.1f s)\n", f["cluster_start_s"], f["cluster_start_wait_s"])
	fmt.Fprintf(&sb, "  helm install to daemons Ready    %8.1f s\n", f["helm_install_s"])
	logMS := "n/a"
	if v, ok := f["label_to_hbone_log_ms"]; ok {
		logMS = fmt.Sprintf("%.0f ms", v)
	}
	fmt.Fprintf(&sb, "  namespace label to first HBONE   %8.0f ms  (destination access log: %s; failed connections meanwhile: %.0f)\n",
		f["label_to_hbone_ms"], logMS, f["label_fail_conns"])
	fmt.Fprintf(&sb, "  %-28s %12s %12s %8s %12s %12s %8s\n", "", "same plain", "same mesh", "ratio", "cross plain", "cross mesh", "ratio")
	for _, m := range []string{"rr_p50_us", "rr_p99_us", "connect_p50_us", "connect_p99_us", "bulk_up_MBps", "bulk_down_MBps",
		"daemon_cpu_per_1000rps", "daemon_cpu_ms_per_connect", "daemon_cpu_s_per_gb", "daemon_rss_mib_max"} {
		fmt.Fprintf(&sb, "  %-28s", m)
		for _, place := range []string{"same", "cross"} {
			p, q := f[m+"_plain_"+place], f[m+"_mesh_"+place]
			ratio := 0.0
			if p > 0 {
				ratio = q / p
			}
			fmt.Fprintf(&sb, " %12.1f %12.1f %7.2fx", p, q, ratio)
		}
		sb.WriteString("\n")
	}
	sb.WriteString("  load average per phase:\n")
	for _, l := range r.loads {
		sb.WriteString("    " + l + "\n")
	}
	return sb.String()
}

// benchLines returns the parsed "bench mode=..." result lines of a client log.
func benchLines(logs string) []map[string]string {
	var out []map[string]string
	for _, l := range strings.Split(logs, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), "bench ")
		if !ok {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		out = append(out, kv)
	}
	return out
}

func benchNum(b *testing.B, kv map[string]string, k string) float64 {
	v, err := strconv.ParseFloat(kv[k], 64)
	if err != nil {
		b.Fatalf("result %v: field %s: %v", kv, k, err)
	}
	return v
}

// bootTime picks cluster.Start's boot time out of its "cluster ready" log
// record.
type bootTime struct {
	mu sync.Mutex
	d  time.Duration
}

func (t *bootTime) get() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.d
}

func (t *bootTime) wrap(h slog.Handler) slog.Handler { return bootHandler{h, t} }

type bootHandler struct {
	slog.Handler
	t *bootTime
}

func (h bootHandler) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Message == "cluster ready" {
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "elapsed" && a.Value.Kind() == slog.KindDuration {
				h.t.mu.Lock()
				h.t.d = a.Value.Duration()
				h.t.mu.Unlock()
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, rec)
}

func (h bootHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return bootHandler{h.Handler.WithAttrs(as), h.t}
}

func (h bootHandler) WithGroup(name string) slog.Handler {
	return bootHandler{h.Handler.WithGroup(name), h.t}
}

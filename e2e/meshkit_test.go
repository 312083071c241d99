package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/e2e/promtext"
)

// mesh is the state the scenarios of TestMesh share: a cluster with ambit
// installed by its chart.
type mesh struct {
	t *testing.T
	c *cluster.Cluster
}

// clientResult is what one run of the echo client printed.
type clientResult struct {
	Phase corev1.PodPhase
	Logs  string
	IP    string
}

// OK counts "ok" lines; Fails counts "fail" lines.
func (r clientResult) OK() int    { return countPrefix(r.Logs, "ok ") }
func (r clientResult) Fails() int { return countPrefix(r.Logs, "fail ") }

func countPrefix(s, p string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, p) {
			n++
		}
	}
	return n
}

// client runs the echo client as a pod (restartPolicy Never) on node in ns
// with the given service account ("" = default), waits for it to finish and
// returns its output; the pod is deleted afterwards.
func (m *mesh) client(ctx context.Context, ns, name, node, sa string, args ...string) clientResult {
	m.t.Helper()
	p := m.clientPod(ns, name, node, sa, args...)
	cs := m.c.Clientset()
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		m.t.Fatal(err)
	}
	defer cs.CoreV1().Pods(ns).Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	return m.waitClient(ctx, ns, name)
}

// startClient starts a client pod and returns at once (waitClient collects it).
func (m *mesh) startClient(ctx context.Context, ns, name, node, sa string, args ...string) {
	m.t.Helper()
	if _, err := m.c.Clientset().CoreV1().Pods(ns).Create(ctx, m.clientPod(ns, name, node, sa, args...), metav1.CreateOptions{}); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mesh) clientPod(ns, name, node, sa string, args ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"role": "client"}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			ServiceAccountName:            sa,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "client", Image: echoImage, ImagePullPolicy: corev1.PullNever,
				Args: append([]string{"client"}, args...),
			}},
		},
	}
	return p
}

// waitClient waits for a client pod to finish (or ctx) and returns its output.
func (m *mesh) waitClient(ctx context.Context, ns, name string) clientResult {
	m.t.Helper()
	cs := m.c.Clientset()
	var r clientResult
	for {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			m.t.Fatalf("client %s/%s: %v", ns, name, err)
		}
		r.Phase, r.IP = p.Status.Phase, p.Status.PodIP
		if r.Phase == corev1.PodSucceeded || r.Phase == corev1.PodFailed {
			break
		}
		select {
		case <-ctx.Done():
			logs, _ := m.c.PodLogs(context.WithoutCancel(ctx), ns, name, "client")
			ev, _ := m.c.Kubectl(context.WithoutCancel(ctx), "get", "events", "-n", ns, "--field-selector", "involvedObject.name="+name)
			m.t.Fatalf("client %s/%s did not finish (phase %s): %v\n%s\n%s", ns, name, r.Phase, ctx.Err(), logs, ev)
		case <-time.After(200 * time.Millisecond):
		}
	}
	logs, err := m.c.PodLogs(ctx, ns, name, "client")
	if err != nil {
		m.t.Fatal(err)
	}
	r.Logs = logs
	return r
}

// deletePod deletes a pod and waits until it is gone.
func (m *mesh) deletePod(ctx context.Context, ns, name string) {
	m.t.Helper()
	cs := m.c.Clientset()
	if err := cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil && !apierrors.IsNotFound(err) {
		m.t.Fatal(err)
	}
	for {
		if _, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
		select {
		case <-ctx.Done():
			m.t.Fatalf("pod %s/%s not deleted: %v", ns, name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// daemonPod is the ambit node daemon pod on node (the newest Running one).
func (m *mesh) daemonPod(ctx context.Context, node string) corev1.Pod {
	m.t.Helper()
	pods, err := m.c.Clientset().CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=ambit", FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		m.t.Fatal(err)
	}
	var best *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		if best == nil || p.CreationTimestamp.After(best.CreationTimestamp.Time) {
			best = p
		}
	}
	if best == nil {
		m.t.Fatalf("no running ambit daemon on %s", node)
	}
	return *best
}

// daemonLogs returns the log of the daemon container of a daemon pod.
func (m *mesh) daemonLogs(ctx context.Context, pod string) string {
	logs, err := m.c.PodLogs(ctx, chartNamespace, pod, "ambit")
	if err != nil {
		m.t.Fatalf("daemon logs: %v", err)
	}
	return logs
}

// accessLine is one access log line of a daemon.
type accessLine map[string]any

func (a accessLine) str(k string) string { s, _ := a[k].(string); return s }

// accessLog parses a daemon's access log lines ({"log":"access",...}).
func accessLog(logs string) []accessLine {
	var out []accessLine
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, `"log":"access"`) {
			continue
		}
		var a accessLine
		if json.Unmarshal([]byte(l), &a) == nil {
			out = append(out, a)
		}
	}
	return out
}

// scrape fetches a daemon pod's /metrics from its node (the metrics port is
// the pod's, as Prometheus reaches it).
func (m *mesh) scrape(ctx context.Context, pod corev1.Pod) string {
	m.t.Helper()
	n := m.node(pod.Spec.NodeName)
	out, err := n.Exec(ctx, "curl", "-sS", "--max-time", "5", fmt.Sprintf("http://%s:15020/metrics", pod.Status.PodIP))
	if err != nil {
		m.t.Fatalf("scrape %s: %v\n%s", pod.Name, err, out)
	}
	return out
}

// ready fetches a daemon's readiness answer (status code and body).
func (m *mesh) ready(ctx context.Context, pod corev1.Pod) (int, string) {
	m.t.Helper()
	n := m.node(pod.Spec.NodeName)
	out, err := n.Exec(ctx, "curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", fmt.Sprintf("http://%s:15021/healthz/ready", pod.Status.PodIP))
	if err != nil {
		return 0, out
	}
	i := strings.LastIndex(out, "\n")
	code, _ := strconv.Atoi(strings.TrimSpace(out[i+1:]))
	return code, out[:i]
}

func (m *mesh) node(name string) *cluster.Node {
	for _, n := range m.c.Nodes {
		if n.Name == name {
			return n
		}
	}
	m.t.Fatalf("no node %s", name)
	return nil
}

// metricSum adds the values of the samples of name whose labels include
// every pair of want.
func metricSum(text, name string, want map[string]string) float64 {
	_, sum := promtext.Samples(text, name, want)
	return sum
}

// eventually polls cond every 250 ms until it returns "" or the timeout,
// then fails with the last message.
func eventually(ctx context.Context, t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("after %s: %s", timeout, msg)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// followedLog is a daemon's log streamed by `kubectl logs -f` into memory.
type followedLog struct {
	pod string
	mu  sync.Mutex
	buf bytes.Buffer
}

func (f *followedLog) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.Write(p)
}

// filtered returns the lines that are not debug or info, plus access
// lines that ended badly.
func (f *followedLog) filtered() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range strings.Split(f.buf.String(), "\n") {
		if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) ||
			(strings.Contains(l, `"log":"access"`) && !strings.Contains(l, `"response_flags":"-"`)) ||
			strings.Contains(l, "stopping") || strings.Contains(l, "running") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// followLogs streams a daemon pod's log until ctx ends.
func (m *mesh) followLogs(ctx context.Context, pod string) *followedLog {
	f := &followedLog{pod: pod}
	root, _ := cluster.ModuleRoot()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "bin", "kubectl"), "logs", "-f", "-n", chartNamespace, pod, "-c", "ambit")
	cmd.Env = append(os.Environ(), m.c.ToolEnv()...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		m.t.Logf("follow %s: %v", pod, err)
		return f
	}
	go cmd.Wait()
	return f
}

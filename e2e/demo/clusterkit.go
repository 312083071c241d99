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
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/e2e/promtext"
)

// session runs and narrates commands against one cluster.
type session struct {
	c     *cluster.Cluster
	w     io.Writer
	t0    time.Time
	facts []string // the recap at the end
}

// fact records one line of the recap.
func (s *session) fact(format string, a ...any) { s.facts = append(s.facts, fmt.Sprintf(format, a...)) }

func (s *session) say(format string, a ...any) { fmt.Fprintf(s.w, format+"\n", a...) }

// step starts a numbered section.
func (s *session) step(title string) { s.say("\n== %s ==", title) }

// show prints a command's output indented, at most max lines (0: all).
func (s *session) show(out string, max int) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, l := range lines {
		if max > 0 && i == max {
			s.say("    ... (%d more lines)", len(lines)-max)
			return
		}
		s.say("    %s", l)
	}
}

// kubectl prints the command as a user types it, runs it against the
// cluster and prints its output (at most max lines).
func (s *session) kubectl(ctx context.Context, max int, args ...string) (string, error) {
	s.say("$ kubectl %s", shellJoin(args))
	out, err := s.c.Kubectl(ctx, args...)
	if err != nil {
		return out, err
	}
	s.show(out, max)
	return out, nil
}

// apply prints `kubectl apply -f -` with the YAML and runs exactly that,
// the YAML on kubectl's standard input.
func (s *session) apply(ctx context.Context, yaml string) error {
	s.say("$ kubectl apply -f - <<EOF")
	s.show(strings.TrimSpace(yaml), 0)
	s.say("  EOF")
	bin := os.Getenv("AMBIT_E2E_BIN")
	if bin == "" {
		root, err := cluster.ModuleRoot()
		if err != nil {
			return err
		}
		bin = filepath.Join(root, "bin")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), "apply", "-f", "-")
	cmd.Env = append(os.Environ(), s.c.ToolEnv()...)
	cmd.Stdin = strings.NewReader(yaml)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl apply: %w: %s", err, out)
	}
	s.show(string(out), 0)
	return nil
}

var plainArg = regexp.MustCompile(`^[A-Za-z0-9_./:=,@%+-]+$`)

// shellJoin renders args as a user types them in a POSIX shell: quoted
// where needed (--flag='value'), and wrapped before a flag, with a
// backslash, once a line passes 100 characters.
func shellJoin(args []string) string {
	qs := make([]string, len(args))
	for i, a := range args {
		qs[i] = quote(a)
		if k := strings.IndexByte(a, '='); strings.HasPrefix(a, "--") && k > 0 && !plainArg.MatchString(a) {
			qs[i] = a[:k+1] + quote(a[k+1:])
		}
	}
	var b strings.Builder
	line := 0
	for i, q := range qs {
		if i > 0 {
			// A flag and the words up to the next flag (its value) stay
			// on one line.
			unit := len(q)
			for j := i + 1; j < len(qs) && !strings.HasPrefix(qs[j], "-"); j++ {
				unit += 1 + len(qs[j])
			}
			if strings.HasPrefix(q, "-") && line+1+unit > 100 && line > 20 {
				b.WriteString(" \\\n      ")
				line = 6
			} else {
				b.WriteByte(' ')
				line++
			}
		}
		b.WriteString(q)
		line += len(q)
	}
	return b.String()
}

func quote(a string) string {
	if plainArg.MatchString(a) {
		return a
	}
	return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
}

// since is the time since t, rounded for reading.
func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// poll calls cond every 250 ms until it returns "" or limit passes; the
// error carries cond's last message.
func poll(ctx context.Context, limit time.Duration, cond func() string) error {
	deadline := time.Now().Add(limit)
	for {
		msg := cond()
		if msg == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %s", limit, msg)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", msg, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// accessLines returns the daemon's JSON access log lines ({"log":"access"}).
func accessLines(logs string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, `"log":"access"`) {
			continue
		}
		var a map[string]any
		if json.Unmarshal([]byte(l), &a) == nil {
			out = append(out, a)
		}
	}
	return out
}

// field is a string attribute of an access log line.
func field(a map[string]any, k string) string { s, _ := a[k].(string); return s }

// brief renders the named attributes of an access log line as JSON, in order.
func brief(a map[string]any, keys ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	n := 0
	for _, k := range keys {
		v, ok := a[k]
		if !ok {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		kj, _ := json.Marshal(k)
		vj, _ := json.Marshal(v)
		b.Write(kj)
		b.WriteByte(':')
		b.Write(vj)
		n++
	}
	b.WriteString(",...}")
	return b.String()
}

// metricLines returns the samples of metric name whose labels include every
// pair of want, and the sum of their values.
func metricLines(text, name string, want map[string]string) ([]string, float64) {
	return promtext.Samples(text, name, want)
}

// packet is one packet of a capture: tcpdump's header line and its payload.
type packet struct{ header, payload string }

// packets splits tcpdump -A text into packets (header lines start with a
// timestamp).
func packets(text string) []packet {
	var out []packet
	for _, l := range strings.Split(text, "\n") {
		if len(l) > 2 && l[0] >= '0' && l[0] <= '9' && l[2] == ':' && strings.Contains(l, " IP ") {
			out = append(out, packet{header: l})
			continue
		}
		if len(out) > 0 {
			out[len(out)-1].payload += l + "\n"
		}
	}
	return out
}

// between reports whether a packet's header names both addresses.
func (p packet) between(a, b string) bool {
	return strings.Contains(p.header, " "+a+".") && strings.Contains(p.header, " "+b+".")
}

// echoPods returns the echo pod on node-1 and the one on node-2.
func (s *session) echoPods(ctx context.Context) (same, cross corev1.Pod, err error) {
	pods, err := s.c.WaitPods(ctx, shopNS, "app=echo", 2, cluster.PodReady)
	if err != nil {
		return same, cross, err
	}
	for _, p := range pods {
		if p.Spec.NodeName == s.c.Nodes[0].Name {
			same = p
		} else {
			cross = p
		}
	}
	if same.Name == "" || cross.Name == "" {
		return same, cross, errors.New("the echo pods are not on both nodes")
	}
	return same, cross, nil
}

// clientResult is what one echo client pod printed.
type clientResult struct {
	IP   string
	Logs string
}

func (r clientResult) count(prefix string) int {
	n := 0
	for _, l := range strings.Split(r.Logs, "\n") {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// runClient starts the echo client as a pod on node-1 in namespace ns with
// service account sa (`kubectl run`), and unless hold, waits for it to
// finish and shows its output (`kubectl logs`).
func (s *session) runClient(ctx context.Context, ns, sa, name string, hold bool, clientArgs ...string) (clientResult, error) {
	over := fmt.Sprintf(`{"apiVersion":"v1","spec":{"serviceAccountName":%q,"nodeName":%q}}`, sa, s.c.Nodes[0].Name)
	args := append([]string{"-n", ns, "run", name, "--image=" + echoRef, "--image-pull-policy=Never",
		"--restart=Never", "--overrides=" + over, "--", "client"}, clientArgs...)
	if _, err := s.kubectl(ctx, 0, args...); err != nil {
		return clientResult{}, err
	}
	if hold {
		return clientResult{}, nil
	}
	return s.waitClient(ctx, ns, name, 0)
}

// waitClient waits for a client pod to finish and shows its last lines.
func (s *session) waitClient(ctx context.Context, ns, name string, tail int) (clientResult, error) {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pods, err := s.c.WaitPods(wctx, ns, "run="+name, 1, cluster.PodDone)
	if err != nil {
		return clientResult{}, err
	}
	args := []string{"-n", ns, "logs", name}
	if tail > 0 {
		args = append(args, fmt.Sprintf("--tail=%d", tail))
	}
	logs, err := s.kubectl(ctx, 0, args...)
	if err != nil {
		return clientResult{}, err
	}
	full, err := s.c.PodLogs(ctx, ns, name, name) // kubectl run names the container after the pod
	if err != nil {
		full = logs
	}
	_ = s.c.Clientset().CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	return clientResult{IP: pods[0].Status.PodIP, Logs: full}, nil
}

// daemon is the Running ambit daemon pod on node.
func (s *session) daemon(ctx context.Context, node string) (corev1.Pod, error) {
	pods, err := s.c.Clientset().CoreV1().Pods(ambitNS).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=ambit", FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return corev1.Pod{}, err
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			return p, nil
		}
	}
	return corev1.Pod{}, fmt.Errorf("no running ambit daemon on %s", node)
}

// accessLine prints the command that finds a DENY in the access log of
// the daemon on node and returns the last line that match accepts, brief.
func (s *session) accessLine(ctx context.Context, node string, match func(map[string]any) bool) (string, error) {
	d, err := s.daemon(ctx, node)
	if err != nil {
		return "", err
	}
	s.say("$ kubectl -n %s logs %s -c ambit | grep '\"response_flags\":\"DENY\"' | tail -1   # %s", ambitNS, d.Name, node)
	var found string
	err = poll(ctx, 10*time.Second, func() string {
		logs, err := s.c.Kubectl(ctx, "-n", ambitNS, "logs", d.Name, "-c", "ambit")
		if err != nil {
			return err.Error()
		}
		for _, a := range accessLines(logs) {
			if match(a) {
				found = brief(a, "direction", "source_principal", "destination_principal", "response_flags", "policy", "reason")
			}
		}
		if found == "" {
			return "no matching access log line on " + node
		}
		return ""
	})
	return found, err
}

// errString is err's text, or "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// scrape fetches the daemon's /metrics from its node, as Prometheus does.
func (s *session) scrape(ctx context.Context, n *cluster.Node) (string, string, error) {
	d, err := s.daemon(ctx, n.Name)
	if err != nil {
		return "", "", err
	}
	url := fmt.Sprintf("http://%s:15020/metrics", d.Status.PodIP)
	out, err := n.Exec(ctx, "curl", "-sS", "--max-time", "5", url)
	return out, url, err
}

// enrolled waits until every daemon reports at least one enrolled pod.
func (s *session) enrolled(ctx context.Context) error {
	return poll(ctx, 30*time.Second, func() string {
		for _, n := range s.c.Nodes {
			text, _, err := s.scrape(ctx, n)
			if err != nil {
				return err.Error()
			}
			if _, v := metricLines(text, "ambit_enrolled_pods", nil); v < 1 {
				return fmt.Sprintf("the daemon on %s reports %v enrolled pods", n.Name, v)
			}
		}
		return ""
	})
}

// startWatch passes the harness's log on and keeps the elapsed time of its
// "cluster ready" line: the start itself, without waiting for another
// cluster on this machine (one runs at a time).
type startWatch struct {
	slog.Handler
	elapsed *atomic.Int64
}

func (h startWatch) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.Handler.Enabled(ctx, l)
}

func (h startWatch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "cluster ready" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "elapsed" && a.Value.Kind() == slog.KindDuration {
				h.elapsed.Store(int64(a.Value.Duration()))
			}
			return true
		})
	}
	if h.Handler.Enabled(ctx, r.Level) {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h startWatch) WithAttrs(as []slog.Attr) slog.Handler {
	return startWatch{h.Handler.WithAttrs(as), h.elapsed}
}

func (h startWatch) WithGroup(g string) slog.Handler {
	return startWatch{h.Handler.WithGroup(g), h.elapsed}
}

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/e2e/images"
)

// outage is how long scenario 8 keeps the CA down: longer than the
// renewal period (half the 3-minute certificate lifetime TestMesh installs).
const outage = 100 * time.Second

// caDown is scenario 8: the CA is gone for longer than a renewal period; new
// connections from new pods keep working on the certificates the nodes hold,
// the failed renewals are counted, and renewal resumes when the CA is back.
// A certificate renewed at half life outlives an outage longer than half its
// life only if the outage begins early in that life, so the outage starts
// when every identity's certificate on both nodes has more than the outage
// left: right after scenario 7, whose new daemons fetched every certificate
// at start.
func (m *mesh) caDown(ctx context.Context, t *testing.T) {
	_, cross := m.echoPods(ctx)
	node1 := m.c.Nodes[0].Name
	target := cross.Status.PodIP + ":8080"
	d1 := m.daemonPod(ctx, node1)
	eventually(ctx, t, 100*time.Second, func() string {
		for _, n := range m.c.Nodes {
			text := m.scrape(ctx, m.daemonPod(ctx, n.Name))
			if !strings.Contains(text, "\nambit_certificate_expiry_seconds{") {
				return "no ambit_certificate_expiry_seconds on " + n.Name
			}
			for _, l := range strings.Split(text, "\n") {
				if !strings.HasPrefix(l, "ambit_certificate_expiry_seconds{") {
					continue
				}
				f := strings.Fields(l)
				if v, err := strconv.ParseFloat(f[len(f)-1], 64); err != nil || v < (outage+40*time.Second).Seconds() {
					return fmt.Sprintf("a certificate on %s has less than the outage left: %s", n.Name, l)
				}
			}
		}
		return ""
	})
	changesBefore := metricSum(m.scrape(ctx, d1), "ambit_identity_certificate_changes_total", nil)

	m.kubectl(ctx, "scale", "deployment", "-n", chartNamespace, "ambit-ca", "--replicas=0")
	down := time.Now()
	eventually(ctx, t, 60*time.Second, func() string {
		pods, err := m.c.Clientset().CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ambit-ca"})
		if err != nil || len(pods.Items) != 0 {
			return fmt.Sprintf("CA pods still present (%v)", err)
		}
		return ""
	})
	n := 0
	for time.Since(down) < outage {
		r := m.client(ctx, meshNS, name("ca-down"), node1, clientSA, "-target", target, "-marker", "CADOWN", "-count", "1", "-timeout", "5s")
		if r.OK() != 1 {
			t.Fatalf("%s into the CA outage a new connection failed: %s", time.Since(down).Round(time.Second), r.Logs)
		}
		n++
		time.Sleep(5 * time.Second)
	}
	failures := metricSum(m.scrape(ctx, d1), "ambit_identity_fetches_total", map[string]string{"result": "failure"})
	t.Logf("CA down %s: %d new connections from new pods, all answered; node-1 counted %v failed renewals", time.Since(down).Round(time.Second), n, failures)
	if failures < 1 {
		t.Errorf("no failed renewal counted while the CA was down longer than a renewal period")
	}

	m.kubectl(ctx, "scale", "deployment", "-n", chartNamespace, "ambit-ca", "--replicas=1")
	if _, err := m.c.WaitPods(ctx, chartNamespace, "app.kubernetes.io/name=ambit-ca", 1, cluster.PodReady); err != nil {
		t.Fatal(err)
	}
	eventually(ctx, t, 90*time.Second, func() string {
		if v := metricSum(m.scrape(ctx, d1), "ambit_identity_certificate_changes_total", nil); v <= changesBefore {
			return fmt.Sprintf("no certificate renewed after the CA came back (%v changes, %v before)", v, changesBefore)
		}
		return ""
	})
	if r := m.client(ctx, meshNS, name("ca-back"), node1, clientSA, "-target", target, "-marker", "CABACK", "-count", "1"); r.OK() != 1 {
		t.Errorf("after the CA came back: %s", r.Logs)
	}
}

// upgrade is scenario 7: `helm upgrade` to a new image tag rolls the
// DaemonSet (maxSurge 1: the new daemon starts beside the old one, takes
// over the capture, then the old one drains) while a client opens a new
// connection every 100 ms and another keeps one connection open.
func (m *mesh) upgrade(ctx context.Context, t *testing.T, chart, dir string) {
	img, err := images.Build(ctx, images.Options{OutDir: filepath.Join(dir, "v2"), Repository: chartImage, Tag: "e2e2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.c.ImportImage(ctx, img.Tar); err != nil {
		t.Fatal(err)
	}
	_, cross := m.echoPods(ctx)
	node1 := m.c.Nodes[0].Name
	old := map[string]bool{}
	for _, n := range m.c.Nodes {
		old[m.daemonPod(ctx, n.Name).Name] = true
	}

	// Keep the old daemons' logs: they are gone with their pods.
	var oldLogs []*followedLog
	for pod := range old {
		oldLogs = append(oldLogs, m.followLogs(ctx, pod))
	}
	defer func() {
		if t.Failed() {
			for _, l := range oldLogs {
				t.Logf("old daemon %s (warnings and errors):\n%s", l.pod, l.filtered())
			}
		}
	}()
	loop, hold := name("loop"), name("hold")
	m.startClient(ctx, meshNS, loop, node1, clientSA, "-target", "echo."+meshNS+".svc.cluster.local:80", "-marker", "LOOP",
		"-count", "900", "-interval", "100ms", "-timeout", "5s")
	m.startClient(ctx, meshNS, hold, node1, clientSA, "-hold", "-target", cross.Status.PodIP+":8080", "-marker", "HOLD",
		"-count", "0", "-interval", "500ms", "-timeout", "5s")
	eventually(ctx, t, 30*time.Second, func() string {
		a, _ := m.c.PodLogs(ctx, meshNS, loop, "client")
		b, _ := m.c.PodLogs(ctx, meshNS, hold, "client")
		if countPrefix(a, "ok ") < 3 || countPrefix(b, "ok ") < 2 {
			return "clients not running yet"
		}
		return ""
	})

	t0 := time.Now()
	if out, err := m.c.Helm(ctx, "upgrade", "ambit", chart, "-n", chartNamespace, "--reuse-values", "--set", "image.tag=e2e2"); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	// Watch the rollout: every daemon on the new image and Ready, the old
	// ones gone; note when the first old one began terminating.
	var firstTerm time.Time
	eventually(ctx, t, 4*time.Minute, func() string {
		pods, err := m.c.Clientset().CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ambit"})
		if err != nil {
			return err.Error()
		}
		newReady := 0
		var left []string
		for _, p := range pods.Items {
			if old[p.Name] {
				left = append(left, p.Name)
				if p.DeletionTimestamp != nil && firstTerm.IsZero() {
					firstTerm = time.Now()
				}
				continue
			}
			if strings.HasSuffix(p.Spec.Containers[0].Image, ":e2e2") && cluster.PodReady(&p) {
				newReady++
			}
		}
		if newReady != len(m.c.Nodes) || len(left) > 0 {
			return fmt.Sprintf("rollout: %d new daemons Ready, old still present: %v", newReady, left)
		}
		return ""
	})
	t.Logf("rollout of %d daemons: %s", len(m.c.Nodes), time.Since(t0).Round(time.Second))

	r := m.waitClient(ctx, meshNS, loop)
	if r.Fails() != 0 || r.OK() < 100 {
		t.Errorf("during the rollout %d of %d new connections failed:\n%s", r.Fails(), r.OK()+r.Fails(), grepLines(r.Logs, "fail"))
	}
	t.Logf("new connections during the rollout: %d answered, %d failed", r.OK(), r.Fails())

	// The long-lived connection lived on after its old daemon began to
	// drain (the chart gives it terminationGracePeriodSeconds; the daemon
	// drains for 20 s), until that daemon exited.
	logs, _ := m.c.PodLogs(ctx, meshNS, hold, "client")
	var last time.Time
	for _, l := range strings.Split(logs, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "ok" {
			if ms, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				last = time.UnixMilli(ms)
			}
		}
	}
	if firstTerm.IsZero() || last.Before(firstTerm.Add(10*time.Second)) {
		t.Errorf("long-lived connection: last answer %s, first old daemon terminating %s: it did not outlive the start of the drain by 10 s\n%s",
			last.Format(time.TimeOnly), firstTerm.Format(time.TimeOnly), logs)
	} else {
		t.Logf("long-lived connection answered until %s after the first old daemon began terminating", last.Sub(firstTerm).Round(time.Second))
	}
	m.deletePod(ctx, meshNS, hold)
	m.deletePod(ctx, meshNS, loop)

	// After the upgrade the mesh works as before.
	for _, n := range m.c.Nodes {
		d := m.daemonPod(ctx, n.Name)
		if code, body := m.ready(ctx, d); code != 200 {
			t.Errorf("new daemon %s not ready: %d %s", d.Name, code, body)
		}
	}
	if r := m.client(ctx, meshNS, name("after"), node1, clientSA, "-target", cross.Status.PodIP+":8080", "-marker", "AFTER", "-count", "1"); r.OK() != 1 {
		t.Errorf("after the upgrade: %s", r.Logs)
	}
}

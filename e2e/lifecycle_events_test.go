package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// lcLinger is how long a deleted client keeps connecting after SIGTERM.
const lcLinger = 4 * time.Second

// lcPodDelete is events 1-3: client pods connecting in a loop are deleted
// (kubectl delete pod: graceful, SIGTERM, the pod's grace period) or
// evicted through the Eviction API; each keeps connecting for lcLinger
// after SIGTERM. Every one of those connections must still go over HBONE:
// a pod that was in the mesh stays captured until its netns is gone.
func (m *mesh) lcPodDelete(ctx context.Context, t *testing.T, name string, strict bool) {
	evict := strings.Contains(name, "evict")
	if strict {
		m.apply(ctx, `apiVersion: security.ambit.dev/v1alpha1
kind: PeerAuthentication
metadata:
  name: lifecycle-strict
  namespace: `+meshNS+`
spec:
  mtls:
    mode: STRICT
`)
		defer m.c.Kubectl(context.WithoutCancel(ctx), "delete", "peerauthentications.security.ambit.dev", "-n", meshNS, "lifecycle-strict")
		time.Sleep(2 * time.Second) // the daemons' informers
	}
	e := m.begin(ctx, t, name)
	pods := e.startClients(ctx, 3, lcLinger)
	time.Sleep(time.Second)
	cs := m.c.Clientset()
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(pods))
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if evict {
				errs[i] = cs.PolicyV1().Evictions(meshNS).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p, Namespace: meshNS}})
			} else {
				errs[i] = cs.CoreV1().Pods(meshNS).Delete(ctx, p, metav1.DeleteOptions{})
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	eventually(ctx, t, 90*time.Second, func() string {
		for _, p := range pods {
			if _, err := cs.CoreV1().Pods(meshNS).Get(ctx, p, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Sprintf("pod %s not gone yet (%v)", p, err)
			}
		}
		return ""
	})
	gone := time.Since(t0)
	time.Sleep(time.Second)
	o := e.finish(ctx, time.Time{})
	// The clients did keep using the network after deletion began: hold
	// answers after each one's "term" line.
	after, termed := 0, 0
	for _, p := range pods {
		n, ok := answersAfterTerm(e.containerLogs(ctx, p, "hold"))
		after += n
		if ok {
			termed++
		}
	}
	o.extra = append(o.extra, fmt.Sprintf("pods=%d gone_after=%s sigtermed=%d hold_answers_after_sigterm=%d", len(pods), gone.Round(100*time.Millisecond), termed, after))
	o.report(t)
	if termed != len(pods) || after < len(pods) {
		t.Errorf("%d of %d clients saw SIGTERM, %d answers after it: the graceful shutdown was not exercised", termed, len(pods), after)
	}
}

// answersAfterTerm counts a hold container's answers after its term line.
func answersAfterTerm(logs string) (int, bool) {
	var term int64
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.HasPrefix(l, "term at=") {
			f := fieldsKV(l)
			term, _ = strconv.ParseInt(f["at"], 10, 64)
			continue
		}
		if m := holdLine.FindStringSubmatch(l); m != nil && m[1] == "ok" && term > 0 {
			if at, _ := strconv.ParseInt(m[2], 10, 64); at > term {
				n++
			}
		}
	}
	return n, term > 0
}

// lcDaemonKill is event 4: the node daemon on the server's node (node-2) is
// killed with SIGKILL; the kubelet restarts its container.
func (m *mesh) lcDaemonKill(ctx context.Context, t *testing.T) {
	e := m.begin(ctx, t, "daemon-sigkill")
	defer e.cleanup(ctx)
	e.startClients(ctx, 1, 0)
	time.Sleep(time.Second)
	node := m.c.Nodes[1].Name
	d := m.daemonPod(ctx, node)
	before := restarts(d)
	pids, err := cluster.PodProcesses(string(d.UID), "ambit")
	if err != nil || len(pids) != 1 {
		t.Fatalf("the daemon process of %s: %v %v", d.Name, pids, err)
	}
	t0 := time.Now()
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var ready time.Duration
	eventually(ctx, t, 90*time.Second, func() string {
		p, err := m.c.Clientset().CoreV1().Pods(chartNamespace).Get(ctx, d.Name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if restarts(*p) <= before || !cluster.PodReady(p) {
			return fmt.Sprintf("daemon %s not restarted and Ready: %s", d.Name, cluster.DescribePod(p))
		}
		ready = time.Since(t0)
		return ""
	})
	time.Sleep(3 * time.Second)
	o := e.finish(ctx, time.Time{})
	o.extra = append(o.extra, "restarted_ready_after="+ready.Round(100*time.Millisecond).String())
	o.report(t)
	// While no daemon process runs, new connections are refused (fail
	// closed); how long that lasts is the kubelet's restart and the
	// daemon's start on a loaded machine (0.8-6.5 s measured), a figure
	// the event reports. What must hold: nothing fails before the kill, and
	// nothing that starts once the daemon is Ready again (1 s for the
	// clients' connections already under way to land).
	if !o.firstFail.IsZero() && o.firstFail.Before(t0.Add(-100*time.Millisecond)) {
		t.Errorf("a connection failed %s before the SIGKILL:\n%s", t0.Sub(o.firstFail), o.failsDetail())
	}
	if back := t0.Add(ready + time.Second); o.lastFailStart.After(back) {
		t.Errorf("a new connection failed %s after the restarted daemon was Ready:\n%s", o.lastFailStart.Sub(t0.Add(ready)), o.failsDetail())
	}
}

// lcDaemonPodDelete is event 5: `kubectl delete pod` of the daemon on the
// server's node (node-2). The DaemonSet starts a replacement beside the
// draining one; new connections must not hang (like an upgrade: none
// refused).
func (m *mesh) lcDaemonPodDelete(ctx context.Context, t *testing.T) {
	e := m.begin(ctx, t, "daemon-pod-delete")
	defer e.cleanup(ctx)
	e.startClients(ctx, 1, 0)
	time.Sleep(time.Second)
	node := m.c.Nodes[1].Name
	old := m.daemonPod(ctx, node)
	cs := m.c.Clientset()
	logs := m.followDaemonLogs(ctx, []string{old.Name})
	defer logs.finish(ctx, t)
	t0 := time.Now()
	if err := cs.CoreV1().Pods(chartNamespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var replReady, oldGone time.Duration
	eventually(ctx, t, 120*time.Second, func() string {
		pods, err := cs.CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ambit", FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return err.Error()
		}
		oldThere := false
		for _, p := range pods.Items {
			if p.UID == old.UID {
				oldThere = true
			} else if cluster.PodReady(&p) && replReady == 0 {
				replReady = time.Since(t0)
			}
		}
		if !oldThere && oldGone == 0 {
			oldGone = time.Since(t0)
		}
		if oldThere || replReady == 0 {
			return fmt.Sprintf("old daemon present %v, replacement Ready after %s", oldThere, replReady)
		}
		return ""
	})
	time.Sleep(3 * time.Second)
	o := e.finish(ctx, time.Time{})
	o.extra = append(o.extra, fmt.Sprintf("replacement_ready_after=%s old_gone_after=%s", replReady.Round(100*time.Millisecond), oldGone.Round(100*time.Millisecond)))
	o.report(t)
	// Issue 10: today about 8.3 s of 2 s timeouts; the goal is an upgrade's
	// handover (none). Bound generously: no hang of seconds.
	if o.refusedFor >= 2*time.Second || o.refused > 10 {
		t.Errorf("after the daemon pod's deletion %d new connections refused over %s (want no hang: under 2 s and at most 10):\n%s",
			o.refused, o.refusedFor, o.failsDetail())
	}
}

// lcRollPod is a pod created during the rollout: one loop of new
// connections for 3 s, from the pod's first one, then it exits.
func lcRollPod(name, node, targetIP string, extraArgs ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: meshNS, Labels: map[string]string{"role": "lifecycle"}},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: clientSA, RestartPolicy: corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{Name: "loop", Image: echoImage, ImagePullPolicy: corev1.PullNever, Args: append([]string{"client", "-bench", "watch",
				"-target", net.JoinHostPort(targetIP, strconv.Itoa(lcBenchPort)), "-interval", "100ms", "-timeout", "2s"}, extraArgs...)}},
		},
	}
}

// lcUpgrade is event 6: `helm upgrade` rolls the DaemonSet (a changed pod
// annotation: same image) while client pods run and new pods are created
// every 800 ms, alternating nodes, until 6 s after the last old daemon began
// terminating (the window where the old daemon's preStop has removed the
// CNI chain entry). No pod may ever send a packet uncaptured, from its
// first connection.
func (m *mesh) lcUpgrade(ctx context.Context, t *testing.T, chart string) {
	e := m.begin(ctx, t, "helm-upgrade")
	defer e.cleanup(ctx)
	e.startClients(ctx, 1, 0)
	time.Sleep(time.Second)
	cs := m.c.Clientset()
	old := map[string]bool{}
	for _, n := range m.c.Nodes {
		old[m.daemonPod(ctx, n.Name).Name] = true
	}
	tgt := e.target(ctx)
	var oldNames []string
	for o := range old {
		oldNames = append(oldNames, o)
	}
	logs := m.followDaemonLogs(ctx, oldNames)
	defer logs.finish(ctx, t)
	t0 := time.Now()
	if out, err := m.c.Helm(ctx, "upgrade", "ambit", chart, "-n", chartNamespace, "--reuse-values",
		"--set-string", "daemon.podAnnotations.lifecycle-rev="+strconv.FormatInt(t0.Unix(), 10)); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	var roll []string
	defer func() {
		for _, p := range roll {
			_ = cs.CoreV1().Pods(meshNS).Delete(context.WithoutCancel(ctx), p, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		}
	}()
	terminating := map[string]time.Time{}
	var done time.Duration
	for i := 0; ; i++ {
		if time.Since(t0) > 4*time.Minute {
			t.Fatalf("rollout not done after 4 minutes (terminating: %v)", terminating)
		}
		nm := name("lc-roll")
		if _, err := cs.CoreV1().Pods(meshNS).Create(ctx, lcRollPod(nm, m.c.Nodes[i%2].Name, tgt.Status.PodIP, "-duration", "3s"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		roll = append(roll, nm)
		time.Sleep(800 * time.Millisecond)
		pods, err := cs.CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ambit"})
		if err != nil {
			t.Fatal(err)
		}
		present := map[string]bool{}
		for _, p := range pods.Items {
			present[p.Name] = true
			if old[p.Name] && p.DeletionTimestamp != nil && terminating[p.Name].IsZero() {
				terminating[p.Name] = time.Now()
			}
		}
		for o := range old {
			if !present[o] && terminating[o].IsZero() {
				terminating[o] = time.Now()
			}
		}
		if len(terminating) == len(old) {
			last := time.Time{}
			for _, at := range terminating {
				if at.After(last) {
					last = at
				}
			}
			if time.Since(last) > 6*time.Second {
				break
			}
		}
	}
	eventually(ctx, t, 3*time.Minute, func() string {
		pods, err := cs.CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ambit"})
		if err != nil {
			return err.Error()
		}
		ready := 0
		for _, p := range pods.Items {
			if old[p.Name] {
				return "old daemon " + p.Name + " still present"
			}
			if cluster.PodReady(&p) {
				ready++
			}
		}
		if done == 0 && ready == len(m.c.Nodes) {
			done = time.Since(t0)
		}
		if ready != len(m.c.Nodes) {
			return fmt.Sprintf("%d new daemons Ready", ready)
		}
		return ""
	})
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if _, err := m.c.WaitPods(wctx, meshNS, "role=lifecycle", 0, func(p *corev1.Pod) bool {
		return !slices.Contains(roll, p.Name) || cluster.PodDone(p)
	}); err != nil {
		t.Fatal(err)
	}
	o := e.finish(ctx, time.Time{})
	// Each new pod's loop: its first answer and every other must come from
	// ambit (the server sees its own address), never the client's.
	clear, refused := 0, 0
	var bad []string
	for _, p := range roll {
		pod, err := cs.CoreV1().Pods(meshNS).Get(ctx, p, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		logs, _ := m.c.PodLogs(ctx, meshNS, p, "loop")
		lr := parseLoop(logs)
		refused += lr.refused
		if len(lr.peers) == 0 {
			bad = append(bad, fmt.Sprintf("%s (%s): no answer: %s", p, pod.Spec.NodeName, logs))
			continue
		}
		if n := lr.clearAnswers(pod.Status.PodIP); n > 0 {
			clear += n
			bad = append(bad, fmt.Sprintf("%s (%s, %s) answered in the clear: %s", p, pod.Spec.NodeName, pod.Status.PodIP, logs))
		}
	}
	o.clearPeers += clear
	o.extra = append(o.extra, fmt.Sprintf("rollout=%s pods_created=%d created_pods_refused=%d created_pods_clear=%d", done.Round(time.Second), len(roll), refused, clear))
	o.report(t)
	if len(bad) > 0 {
		t.Errorf("pods created during the rollout:\n%s", strings.Join(bad, "\n"))
	}
	if o.refusedFor >= 2*time.Second {
		t.Errorf("during the rollout new connections were refused for %s (want under 2 s):\n%s", o.refusedFor, o.failsDetail())
	}
}

// lcAPIServerRestart is event 8: kube-apiserver is killed (SIGKILL) and
// started again 20 s later. Live and new connections keep working; each
// daemon's ambit_informer_stale says 1 while its watches fail and 0 once
// they are back.
func (m *mesh) lcAPIServerRestart(ctx context.Context, t *testing.T) {
	e := m.begin(ctx, t, "apiserver-restart")
	defer e.cleanup(ctx)
	e.startClients(ctx, 1, 0)
	time.Sleep(time.Second)
	var daemons []corev1.Pod
	for _, n := range m.c.Nodes {
		daemons = append(daemons, m.daemonPod(ctx, n.Name))
	}
	stale := func(d corev1.Pod) float64 { return metricSum(m.scrape(ctx, d), "ambit_informer_stale", nil) }
	for _, d := range daemons {
		if v := stale(d); v != 0 {
			t.Errorf("daemon %s: ambit_informer_stale %v before the outage", d.Name, v)
		}
	}
	if err := m.c.KillAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	staleAt := map[string]time.Duration{}
	for time.Since(down) < 20*time.Second {
		for _, d := range daemons {
			if _, ok := staleAt[d.Name]; !ok && stale(d) >= 1 {
				staleAt[d.Name] = time.Since(down)
			}
		}
		time.Sleep(time.Second)
	}
	if err := m.c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	var cleared time.Duration
	eventually(ctx, t, 60*time.Second, func() string {
		for _, d := range daemons {
			if v := stale(d); v != 0 {
				return fmt.Sprintf("daemon %s: ambit_informer_stale %v after the API server came back", d.Name, v)
			}
		}
		cleared = time.Since(up)
		return ""
	})
	time.Sleep(2 * time.Second)
	o := e.finish(ctx, time.Time{})
	var st []string
	for _, d := range daemons {
		if at, ok := staleAt[d.Name]; ok {
			st = append(st, d.Spec.NodeName+":"+at.Round(100*time.Millisecond).String())
		} else {
			st = append(st, d.Spec.NodeName+":never")
		}
	}
	o.extra = append(o.extra, fmt.Sprintf("down=%s stale_after=%s stale_cleared_after=%s", up.Sub(down).Round(time.Second), strings.Join(st, ","), cleared.Round(100*time.Millisecond)))
	o.report(t)
	if len(staleAt) != len(daemons) {
		t.Errorf("ambit_informer_stale did not go to 1 on every daemon while the API server was down: %v", st)
	}
	// Issue 10 measured every request answered through a 30 s outage.
	if o.refused != 0 || o.holdsCut != 0 {
		t.Errorf("with the API server down: %d new connections refused, %d long-lived ones cut:\n%s", o.refused, o.holdsCut, o.failsDetail())
	}
}

// lcRelabel is event 9: the namespace is unlabelled while connections run,
// then labelled again. Releasing a namespace is a deliberate switch to
// plaintext, so the unlabelled window is only measured (the loops' new
// connections go in the clear there by design); the assertions are that
// every connection that began before the unlabel, and every one that began
// once the daemons report the pods enrolled again, went over HBONE only.
func (m *mesh) lcRelabel(ctx context.Context, t *testing.T) {
	e := m.begin(ctx, t, "ns-relabel")
	defer e.cleanup(ctx)
	e.startClients(ctx, 1, 0)
	time.Sleep(time.Second)
	unlabel := time.Now()
	m.lcLabel(ctx, t, false)
	released := time.Since(unlabel)
	time.Sleep(3 * time.Second)
	relabel := time.Now()
	m.lcLabel(ctx, t, true)
	enrolled := time.Now()
	time.Sleep(3 * time.Second)
	o := e.finish(ctx, enrolled)
	// The window: connections that began between unlabel and re-enrolment.
	markers := []string{e.marker}
	pre := judgeWire(e.pkts, e.mesh, markers, time.Time{}, unlabel)
	window := judgeWire(e.pkts, e.mesh, markers, unlabel, enrolled)
	o.extra = append(o.extra, fmt.Sprintf("released_after=%s enrolled_after=%s plaintext_in_unlabelled_window=%d plaintext_before_unlabel=%d",
		released.Round(100*time.Millisecond), enrolled.Sub(relabel).Round(100*time.Millisecond), window.plaintext, pre.plaintext))
	// Answers in the clear are expected in the window; report, do not fail.
	clear := o.clearPeers
	o.clearPeers = 0
	o.report(t)
	t.Logf("ns-relabel: %d answers in the clear during the unlabelled window (by design)", clear)
	if pre.plaintext != 0 || pre.marker != 0 {
		t.Errorf("%d plaintext packets (%d with the marker) in connections that began before the unlabel:\n%s", pre.plaintext, pre.marker, strings.Join(pre.examples, "\n"))
	}
}

// lcCreateMany is event 10: 20 pods (10 per node) applied at once with
// kubectl; each opens a new connection every 100 ms from its start until
// the server sees ambit's address (its first HBONE connection). Reported:
// time from `kubectl apply` to each pod's first HBONE answer (p50, max).
func (m *mesh) lcCreateMany(ctx context.Context, t *testing.T) {
	e := m.begin(ctx, t, "create-20")
	tgt := e.target(ctx)
	var docs, names []string
	for i := 0; i < 20; i++ {
		nm := fmt.Sprintf("lc-many-%d", i)
		names = append(names, nm)
		p := lcRollPod(nm, m.c.Nodes[i%2].Name, tgt.Status.PodIP, "-duration", "60s", "-until-peer", tgt.Status.PodIP)
		p.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		p.Labels["batch"] = "many"
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	f := filepath.Join(t.TempDir(), "pods.json")
	if err := os.WriteFile(f, []byte(`{"apiVersion":"v1","kind":"List","items":[`+strings.Join(docs, ",")+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cs := m.c.Clientset()
	defer func() {
		for _, p := range names {
			_ = cs.CoreV1().Pods(meshNS).Delete(context.WithoutCancel(ctx), p, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		}
	}()
	t0 := time.Now()
	m.kubectl(ctx, "apply", "-f", f)
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer wcancel()
	if _, err := m.c.WaitPods(wctx, meshNS, "batch=many", len(names), cluster.PodDone); err != nil {
		t.Fatal(err)
	}
	o := e.finish(ctx, time.Time{})
	var firsts []time.Duration
	var bad []string
	for _, p := range names {
		pod, err := cs.CoreV1().Pods(meshNS).Get(ctx, p, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		logs, _ := m.c.PodLogs(ctx, meshNS, p, "loop")
		lr := parseLoop(logs)
		o.refused += lr.refused
		o.attempts += lr.attempts
		o.clearPeers += lr.clearAnswers(pod.Status.PodIP)
		if len(lr.peers) == 0 || lr.peers[0] != tgt.Status.PodIP || pod.Status.Phase != corev1.PodSucceeded {
			bad = append(bad, fmt.Sprintf("%s (%s): first answer not carried by ambit: %s", p, pod.Status.PodIP, logs))
			continue
		}
		firsts = append(firsts, lr.firstPeerAt.Sub(t0))
	}
	slices.Sort(firsts)
	if len(firsts) > 0 {
		o.extra = append(o.extra, fmt.Sprintf("pods=%d first_hbone_p50=%s first_hbone_max=%s", len(names),
			firsts[len(firsts)/2].Round(10*time.Millisecond), firsts[len(firsts)-1].Round(10*time.Millisecond)))
	}
	o.report(t)
	if len(bad) > 0 {
		t.Errorf("%d of %d pods:\n%s", len(bad), len(names), strings.Join(bad, "\n"))
	}
}

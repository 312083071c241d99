package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// Ports of the lifecycle suite's echo servers: 8080 the echo protocol (the
// long-lived connection), 8081 the bench protocol (the connection loop).
const (
	lcEchoPort  = 8080
	lcBenchPort = 8081
)

// event is one lifecycle event under way: the captures on both nodes'
// bridges, the client pods it started and the addresses of every pod of
// the mesh namespace seen while it ran.
type event struct {
	m      *mesh
	t      *testing.T
	name   string
	marker string
	start  time.Time

	caps    []*cluster.Capture
	clients []string // client pods with a loop and a hold container

	mu     sync.Mutex
	ips    map[netip.Addr]bool   // addresses of meshNS pods and the echo Service
	logs   map[string]*podStream // followed logs by "pod/container"
	podIP  map[string]string     // client pod name -> its address
	podUID map[string]string     // client pod name -> its UID

	pkts []packet            // after finish: both captures
	mesh map[netip.Addr]bool // after finish: the mesh addresses

	finished bool // finish stopped the captures

	stopRec context.CancelFunc
	recDone chan struct{}
}

// begin starts an event: a tcp capture on cni0 of every node and a recorder
// of the mesh namespace's pod addresses.
func (m *mesh) begin(ctx context.Context, t *testing.T, name string) *event {
	t.Helper()
	e := &event{m: m, t: t, name: name, marker: "LC-" + strings.ToUpper(name) + "-MARK", start: time.Now(),
		ips: map[netip.Addr]bool{}, logs: map[string]*podStream{}, podIP: map[string]string{}, podUID: map[string]string{}, recDone: make(chan struct{})}
	for _, n := range m.c.Nodes {
		cp, err := n.StartCapture(ctx, "cni0", "tcp")
		if err != nil {
			t.Fatal(err)
		}
		e.caps = append(e.caps, cp)
		// A failed event must not leave tcpdump behind: it drops its
		// privileges, so the parent-death signal does not reach it, and it
		// would keep the node's network namespace alive.
		t.Cleanup(func() {
			if !e.finished {
				_, _ = cp.Stop(context.WithoutCancel(ctx))
			}
		})
	}
	svc, err := m.c.Clientset().CoreV1().Services(meshNS).Get(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.addIP(svc.Spec.ClusterIP)
	rctx, cancel := context.WithCancel(ctx)
	e.stopRec = cancel
	t.Cleanup(cancel)
	go e.record(rctx)
	return e
}

func (e *event) addIP(s string) {
	if a, err := netip.ParseAddr(s); err == nil {
		e.mu.Lock()
		e.ips[a] = true
		e.mu.Unlock()
	}
}

// record lists the mesh namespace's pods every 200 ms and keeps their
// addresses (API errors, as while the API server is down, are skipped).
func (e *event) record(ctx context.Context) {
	defer close(e.recDone)
	for {
		if pods, err := e.m.c.Clientset().CoreV1().Pods(meshNS).List(ctx, metav1.ListOptions{}); err == nil {
			for _, p := range pods.Items {
				for _, ip := range p.Status.PodIPs {
					e.addIP(ip.IP)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lcClientPod is a client pod of the suite: a "loop" container opening a
// new connection every 100 ms (echo client -bench watch, each attempt on
// its own so a hanging one does not delay the next, 2 s timeout) and a
// "hold" container keeping one connection that carries the event's marker
// every 500 ms. On SIGTERM both keep going for linger (a graceful shutdown
// that still uses the network); the pod's grace period covers it.
func lcClientPod(name, node, targetIP, marker string, linger time.Duration) *corev1.Pod {
	grace := int64(linger/time.Second) + 5
	l := "-linger=" + linger.String()
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: meshNS, Labels: map[string]string{"role": "lifecycle"}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			ServiceAccountName:            clientSA,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{
				{Name: "loop", Image: echoImage, ImagePullPolicy: corev1.PullNever, Args: []string{"client", "-bench", "watch",
					"-target", net.JoinHostPort(targetIP, strconv.Itoa(lcBenchPort)), "-interval", "100ms", "-timeout", "2s", "-duration", "30m", l}},
				{Name: "hold", Image: echoImage, ImagePullPolicy: corev1.PullNever, Args: []string{"client", "-hold",
					"-target", net.JoinHostPort(targetIP, strconv.Itoa(lcEchoPort)), "-marker", marker, "-count", "0", "-interval", "500ms", "-timeout", "2s", l}},
			},
		},
	}
}

// targets are the echo pods a client on node-1 and one on node-2 talk to:
// both the echo pod on node-2 (across nodes, and on the same node).
func (e *event) target(ctx context.Context) corev1.Pod {
	_, cross := e.m.echoPods(ctx)
	return cross
}

// startClients starts perNode client pods on each node, all talking to the
// echo pod on node-2, waits until each loop and hold has its first answer
// and follows their logs (deleted pods take their logs with them).
func (e *event) startClients(ctx context.Context, perNode int, linger time.Duration) []string {
	e.t.Helper()
	tgt := e.target(ctx)
	var names []string
	for i := 0; i < perNode; i++ {
		for _, n := range e.m.c.Nodes {
			nm := name("lc-" + e.name)
			if _, err := e.m.c.Clientset().CoreV1().Pods(meshNS).Create(ctx, lcClientPod(nm, n.Name, tgt.Status.PodIP, e.marker, linger), metav1.CreateOptions{}); err != nil {
				e.t.Fatal(err)
			}
			names = append(names, nm)
		}
	}
	e.clients = append(e.clients, names...)
	for _, nm := range names {
		e.waitFirstAnswers(ctx, nm)
	}
	return names
}

// waitFirstAnswers waits until a client pod's loop and hold have answers,
// then follows their logs.
func (e *event) waitFirstAnswers(ctx context.Context, pod string) {
	e.t.Helper()
	eventually(ctx, e.t, 60*time.Second, func() string {
		a, _ := e.m.c.PodLogs(ctx, meshNS, pod, "loop")
		b, _ := e.m.c.PodLogs(ctx, meshNS, pod, "hold")
		if !strings.Contains(a, " peer=") || !strings.Contains(b, "ok ") {
			return fmt.Sprintf("client %s has no answers yet: loop %q hold %q", pod, a, b)
		}
		return ""
	})
	p, err := e.m.c.Clientset().CoreV1().Pods(meshNS).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.podIP[pod] = p.Status.PodIP
	e.podUID[pod] = string(p.UID)
	e.mu.Unlock()
	e.addIP(p.Status.PodIP)
	for _, c := range []string{"loop", "hold"} {
		e.follow(ctx, pod, c)
	}
}

// podStream is a container's log followed through the API.
type podStream struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *podStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *podStream) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (e *event) follow(ctx context.Context, pod, container string) {
	s := &podStream{}
	e.mu.Lock()
	e.logs[pod+"/"+container] = s
	e.mu.Unlock()
	go func() {
		rc, err := e.m.c.Clientset().CoreV1().Pods(meshNS).GetLogs(pod, &corev1.PodLogOptions{Container: container, Follow: true}).Stream(ctx)
		if err != nil {
			return
		}
		defer rc.Close()
		_, _ = io.Copy(s, rc)
	}()
}

// containerLogs returns a container's whole log: from the API when the pod
// still exists, else what was followed.
func (e *event) containerLogs(ctx context.Context, pod, container string) string {
	if l, err := e.m.c.PodLogs(ctx, meshNS, pod, container); err == nil {
		return l
	}
	e.mu.Lock()
	s := e.logs[pod+"/"+container]
	e.mu.Unlock()
	if s == nil {
		return ""
	}
	return s.String()
}

var (
	watchLine = regexp.MustCompile(`^watch at=(\d+) ms=([0-9.]+) (peer|fail)=(.*)$`)
	holdLine  = regexp.MustCompile(`^(ok|fail) (\d+) (.*)$`)
)

// loopResult is what a client's loop container printed.
type loopResult struct {
	attempts, ok, refused int
	firstFail, lastFail   time.Time // start of the first failed attempt, end of the last
	lastFailStart         time.Time // start of the last failed attempt
	peers                 []string  // answer peer hosts, in order (first, then every change)
	firstPeerAt           time.Time // end of the first answer
	fails                 []string
}

func parseLoop(logs string) loopResult {
	var r loopResult
	for _, l := range strings.Split(logs, "\n") {
		if m := watchLine.FindStringSubmatch(l); m != nil {
			at, _ := strconv.ParseInt(m[1], 10, 64)
			ms, _ := strconv.ParseFloat(m[2], 64)
			start := time.UnixMilli(at)
			end := start.Add(time.Duration(ms * float64(time.Millisecond)))
			if m[3] == "fail" {
				if r.firstFail.IsZero() || start.Before(r.firstFail) {
					r.firstFail = start
				}
				if end.After(r.lastFail) {
					r.lastFail = end
				}
				if start.After(r.lastFailStart) {
					r.lastFailStart = start
				}
				r.fails = append(r.fails, l)
				continue
			}
			host, _, err := net.SplitHostPort(m[4])
			if err != nil {
				host = m[4]
			}
			if len(r.peers) == 0 {
				r.firstPeerAt = end
			}
			r.peers = append(r.peers, host)
			continue
		}
		if strings.HasPrefix(l, "bench mode=watch ") {
			f := fieldsKV(l)
			r.attempts, _ = strconv.Atoi(f["n"])
			r.ok, _ = strconv.Atoi(f["ok"])
			r.refused, _ = strconv.Atoi(f["fail"])
		}
	}
	if r.attempts == 0 { // still running: count what was printed
		r.refused = len(r.fails)
	}
	return r
}

// clearAnswers counts the printed answers where the server saw the client's
// own address ip: a connection ambit did not carry (watch prints the first
// answer and every answer from another host than the first's).
func (r loopResult) clearAnswers(ip string) int {
	n := 0
	for _, h := range r.peers {
		if h == ip {
			n++
		}
	}
	return n
}

func fieldsKV(l string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(l) {
		if k, v, ok := strings.Cut(f, "="); ok {
			out[k] = v
		}
	}
	return out
}

// holdResult is what a client's hold container printed.
type holdResult struct {
	answers int
	cut     string // the failure line, if the connection was cut
}

func parseHold(logs string) holdResult {
	var r holdResult
	for _, l := range strings.Split(logs, "\n") {
		if m := holdLine.FindStringSubmatch(l); m != nil {
			if m[1] == "ok" {
				r.answers++
			} else if r.cut == "" {
				r.cut = l
			}
		}
	}
	return r
}

// outcome is the measured result of an event.
type outcome struct {
	name       string
	refused    int
	attempts   int
	refusedFor time.Duration
	// firstFail and lastFailStart: the starts of the first and the last
	// failed attempt of any client (zero: none failed).
	firstFail, lastFailStart time.Time
	plaintext                int
	marker                   int
	hboneSeen                int
	holdsCut                 int
	holds                    int
	clearPeers               int // loop answers where the server saw the client's own address (plaintext)
	extra                    []string
	wire                     wireVerdict
	loopFails                []string
	holdCutMsgs              []string
}

// finish stops the captures and the recorder, reads the clients' logs and
// judges the wire: connections first seen at or after since count (zero:
// all). It does not delete the clients.
func (e *event) finish(ctx context.Context, since time.Time) *outcome {
	e.t.Helper()
	var pkts []packet
	for _, cp := range e.caps {
		if _, err := cp.Stop(ctx); err != nil {
			e.t.Fatal(err)
		}
		p, err := readCapture(ctx, cp.File())
		if err != nil {
			e.t.Fatal(err)
		}
		pkts = append(pkts, p...)
	}
	e.finished = true
	e.stopRec()
	<-e.recDone
	e.stopClients(ctx)
	o := &outcome{name: e.name}
	for _, pod := range e.clients {
		e.mu.Lock()
		ip := e.podIP[pod]
		e.mu.Unlock()
		lr := parseLoop(e.containerLogs(ctx, pod, "loop"))
		o.attempts += lr.attempts
		o.refused += lr.refused
		o.loopFails = append(o.loopFails, lr.fails...)
		if !lr.firstFail.IsZero() {
			if d := lr.lastFail.Sub(lr.firstFail); d > o.refusedFor {
				o.refusedFor = d
			}
			if o.firstFail.IsZero() || lr.firstFail.Before(o.firstFail) {
				o.firstFail = lr.firstFail
			}
			if lr.lastFailStart.After(o.lastFailStart) {
				o.lastFailStart = lr.lastFailStart
			}
		}
		o.clearPeers += lr.clearAnswers(ip)
		hr := parseHold(e.containerLogs(ctx, pod, "hold"))
		o.holds++
		if hr.cut != "" {
			o.holdsCut++
			o.holdCutMsgs = append(o.holdCutMsgs, pod+": "+hr.cut)
		}
	}
	e.mu.Lock()
	mesh := make(map[netip.Addr]bool, len(e.ips))
	for a := range e.ips {
		mesh[a] = true
	}
	e.mu.Unlock()
	e.pkts, e.mesh = pkts, mesh
	o.wire = judgeWire(pkts, mesh, []string{e.marker}, since, time.Time{})
	o.plaintext, o.marker, o.hboneSeen = o.wire.plaintext, o.wire.marker, o.wire.hbone
	return o
}

// stopClients ends the clients still running (after the captures stopped)
// with SIGTERM to their processes, so each loop prints its summary (attempts,
// answers, failures), and waits until their pods are done.
func (e *event) stopClients(ctx context.Context) {
	e.t.Helper()
	cs := e.m.c.Clientset()
	var running []string
	for _, pod := range e.clients {
		if _, err := cs.CoreV1().Pods(meshNS).Get(ctx, pod, metav1.GetOptions{}); err != nil {
			continue // deleted by the event
		}
		e.mu.Lock()
		uid := e.podUID[pod]
		e.mu.Unlock()
		pids, err := cluster.PodProcesses(uid, "echo")
		if err != nil {
			e.t.Fatal(err)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		running = append(running, pod)
	}
	eventually(ctx, e.t, 30*time.Second, func() string {
		for _, pod := range running {
			p, err := cs.CoreV1().Pods(meshNS).Get(ctx, pod, metav1.GetOptions{})
			if err == nil && !cluster.PodDone(p) {
				return "client " + pod + " still running after SIGTERM: " + cluster.DescribePod(p)
			}
		}
		return ""
	})
}

// cleanup deletes the event's client pods at once (after finish: the
// captures have stopped).
func (e *event) cleanup(ctx context.Context) {
	for _, pod := range e.clients {
		_ = e.m.c.Clientset().CoreV1().Pods(meshNS).Delete(ctx, pod, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	}
}

// line is the event's one report line.
func (o *outcome) line() string {
	s := fmt.Sprintf("lifecycle event=%s refused=%d refused_for=%s plaintext_packets=%d marker_in_clear=%d attempts=%d hbone_packets=%d holds_cut=%d/%d clear_answers=%d",
		o.name, o.refused, o.refusedFor.Round(time.Millisecond), o.plaintext, o.marker, o.attempts, o.hboneSeen, o.holdsCut, o.holds, o.clearPeers)
	if len(o.extra) > 0 {
		s += " " + strings.Join(o.extra, " ")
	}
	return s
}

// report prints the line (test log and stdout) and asserts what holds for
// every event after the label: no packet between mesh pods outside the
// HBONE port, no marker in the clear, every answer carried by ambit.
func (o *outcome) report(t *testing.T) {
	t.Helper()
	l := o.line()
	t.Log(l)
	fmt.Println(l)
	if o.plaintext != 0 || o.marker != 0 {
		t.Errorf("%s: %d packets between mesh pods outside port %d, %d with the marker in the clear, e.g.:\n%s",
			o.name, o.plaintext, hbonePort, o.marker, strings.Join(o.wire.examples, "\n"))
	}
	if o.clearPeers != 0 {
		t.Errorf("%s: %d answers where the server saw the client's own address (not carried by ambit)", o.name, o.clearPeers)
	}
	if o.hboneSeen == 0 {
		t.Errorf("%s: no packet on port %d captured: the captures saw nothing", o.name, hbonePort)
	}
}

// failsDetail lists the loop failures and cut holds (for a failed bound).
func (o *outcome) failsDetail() string {
	fails := o.loopFails
	if len(fails) > 20 {
		fails = append(slices.Clip(fails[:20]), fmt.Sprintf("... %d more", len(o.loopFails)-20))
	}
	return strings.Join(append(fails, o.holdCutMsgs...), "\n")
}

// daemonLogs follows the ambit container's log of each named daemon pod
// from now on (pods about to be replaced: their logs go with them), keeping
// every line but the access log. text returns what was collected, then
// every current daemon's log (tail, access log dropped), for a failure
// report.
type daemonLogs struct {
	m      *mesh
	mu     sync.Mutex
	lines  []string
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func (m *mesh) followDaemonLogs(ctx context.Context, pods []string) *daemonLogs {
	ctx, cancel := context.WithCancel(ctx)
	d := &daemonLogs{m: m, cancel: cancel}
	for _, p := range pods {
		d.done.Add(1)
		go func() {
			defer d.done.Done()
			rc, err := m.c.Clientset().CoreV1().Pods(chartNamespace).GetLogs(p, &corev1.PodLogOptions{Container: "ambit", Follow: true, SinceSeconds: ptrTo(int64(5))}).Stream(ctx)
			if err != nil {
				d.add(p, "(log stream: "+err.Error()+")")
				return
			}
			defer rc.Close()
			s := bufio.NewScanner(rc)
			s.Buffer(make([]byte, 64<<10), 1<<20)
			for s.Scan() {
				if !strings.Contains(s.Text(), `"log":"access"`) {
					d.add(p, s.Text())
				}
			}
		}()
	}
	return d
}

func ptrTo[T any](v T) *T { return &v }

func (d *daemonLogs) add(pod, line string) {
	d.mu.Lock()
	d.lines = append(d.lines, "["+pod+"] "+line)
	d.mu.Unlock()
}

func (d *daemonLogs) stop() {
	d.cancel()
	d.done.Wait()
}

// finish stops following and, if the test failed, logs what was collected.
func (d *daemonLogs) finish(ctx context.Context, t *testing.T) {
	if !t.Failed() {
		d.stop()
		return
	}
	t.Logf("daemon logs (access log dropped):\n%s", d.text(context.WithoutCancel(ctx)))
}

func (d *daemonLogs) text(ctx context.Context) string {
	d.stop()
	d.mu.Lock()
	out := strings.Join(d.lines, "\n")
	d.mu.Unlock()
	pods, err := d.m.c.Clientset().CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ambit"})
	if err != nil {
		return out
	}
	for _, p := range pods.Items {
		b, err := d.m.c.Clientset().CoreV1().Pods(chartNamespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: "ambit", TailLines: ptrTo(int64(5000))}).DoRaw(ctx)
		if err != nil {
			continue
		}
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" && !strings.Contains(l, `"log":"access"`) {
				keep = append(keep, "["+p.Name+" (current)] "+l)
			}
		}
		if len(keep) > 150 {
			keep = keep[len(keep)-150:]
		}
		out += "\n" + strings.Join(keep, "\n")
	}
	return out
}

package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type podSpec struct {
	name, node string
	phase      corev1.PodPhase
	ready      bool
	deleting   bool
	age        time.Duration
}

func mkPod(s podSpec) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: s.name, CreationTimestamp: metav1.NewTime(now.Add(-s.age))},
		Spec:       corev1.PodSpec{NodeName: s.node},
		Status:     corev1.PodStatus{Phase: s.phase},
	}
	st := corev1.ConditionFalse
	if s.ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodInitialized, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: st}}
	if s.deleting {
		ts := metav1.NewTime(now)
		p.DeletionTimestamp = &ts
	}
	return p
}

func TestSelectPod(t *testing.T) {
	running := corev1.PodRunning
	for _, tc := range []struct {
		name    string
		pods    []podSpec
		want    string // pod name, or an error substring after "error: "
		wantErr bool
	}{
		{name: "none", pods: nil, want: "no pod of DaemonSet ambit-system/ambit on node n1", wantErr: true},
		{name: "only other nodes", pods: []podSpec{{name: "a", node: "n2", phase: running, ready: true}},
			want: "no pod of DaemonSet ambit-system/ambit on node n1", wantErr: true},
		{name: "one", pods: []podSpec{{name: "a", node: "n2", phase: running, ready: true}, {name: "b", node: "n1", phase: running, ready: true, age: time.Hour}},
			want: "b"},
		{name: "surge: newest ready wins", pods: []podSpec{
			{name: "old", node: "n1", phase: running, ready: true, age: time.Hour},
			{name: "new", node: "n1", phase: running, ready: true, age: time.Minute}}, want: "new"},
		{name: "surge: new not ready yet, old still serves", pods: []podSpec{
			{name: "old", node: "n1", phase: running, ready: true, age: time.Hour},
			{name: "new", node: "n1", phase: running, age: time.Second}}, want: "old"},
		{name: "terminating loses to running", pods: []podSpec{
			{name: "old", node: "n1", phase: running, ready: true, deleting: true, age: time.Hour},
			{name: "new", node: "n1", phase: running, ready: true, age: time.Second}}, want: "new"},
		{name: "only terminating still answers", pods: []podSpec{
			{name: "old", node: "n1", phase: running, ready: true, deleting: true}}, want: "old"},
		{name: "running not ready beats pending", pods: []podSpec{
			{name: "p", node: "n1", phase: corev1.PodPending, age: time.Second},
			{name: "r", node: "n1", phase: running, age: time.Hour}}, want: "r"},
		{name: "only pending", pods: []podSpec{{name: "p", node: "n1", phase: corev1.PodPending}},
			want: "daemon pod ambit-system/p on node n1 is Pending, not running", wantErr: true},
		{name: "no phase yet", pods: []podSpec{{name: "p", node: "n1"}}, want: "is Pending, not running", wantErr: true},
		{name: "failed", pods: []podSpec{{name: "f", node: "n1", phase: corev1.PodFailed}}, want: "is Failed, not running", wantErr: true},
		{name: "same age: by name", pods: []podSpec{
			{name: "b", node: "n1", phase: running, ready: true}, {name: "a", node: "n1", phase: running, ready: true}}, want: "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pods []corev1.Pod
			for _, s := range tc.pods {
				pods = append(pods, mkPod(s))
			}
			p, err := selectPod(pods, "n1", "ambit-system/ambit")
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil || p.Name != tc.want {
				t.Fatalf("got %v, %v; want %s", p, err, tc.want)
			}
		})
	}
}

func TestSelectDaemonSet(t *testing.T) {
	ds := func(n string) appsv1.DaemonSet { return appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: n}} }
	if _, err := selectDaemonSet(nil, "mesh"); err == nil || !strings.Contains(err.Error(), "no DaemonSet labelled app.kubernetes.io/name=ambit in namespace mesh") {
		t.Errorf("none: %v", err)
	}
	if d, err := selectDaemonSet([]appsv1.DaemonSet{ds("ambit")}, "mesh"); err != nil || d.Name != "ambit" {
		t.Errorf("one: %v %v", d, err)
	}
	if _, err := selectDaemonSet([]appsv1.DaemonSet{ds("b"), ds("a")}, "mesh"); err == nil || !strings.Contains(err.Error(), "(a, b): choose one with --daemonset") {
		t.Errorf("two: %v", err)
	}
}

// TestClusterUnreachable: --node and --pod fail with one line (exit 1)
// when the kubeconfig is missing or its API server does not answer.
func TestClusterUnreachable(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"workloads", "--node", "n1", "--kubeconfig", filepath.Join(dir, "missing")}, "kubeconfig:"},
		{[]string{"workloads", "--node", "n1", "--kubeconfig", kc, "--timeout", "5s"}, "list DaemonSets in ambit-system:"},
		{[]string{"workloads", "--node", "n1", "--kubeconfig", kc, "--daemonset", "ambit"}, "DaemonSet ambit-system/ambit:"},
		{[]string{"certs", "--pod", "mesh/ambit-1", "--kubeconfig", kc}, "pod mesh/ambit-1:"},
		{[]string{"certs", "--pod", "ambit-1", "--kubeconfig", kc, "--context", "nope"}, `kubeconfig: context "nope" does not exist`},
	} {
		code, out, errOut := runCtl(t, tc.args...)
		if code != ExitError || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1, one line with %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

package e2e

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// TestLifecycle is issue 10's lifecycle suite: one real two-node cluster with
// the chart installed once, the echo pods of TestMesh in a namespace in the
// mesh, then every event that can touch a pod in the mesh, in sequence. Each
// event runs with client pods opening a new connection every 100 ms and
// holding a long-lived one, and a packet capture on both nodes' pod bridges
// (cni0) for the whole event; it asserts that no packet between pods of the
// mesh namespace used another port than 15008 and that the event's marker
// never crossed in the clear, and prints one line
//
//	lifecycle event=<name> refused=<n> refused_for=<d> plaintext_packets=<n> ...
//
// (docs/lifecycle-suite.md lists the events, what each asserts and the last
// measured figures).
func TestLifecycle(t *testing.T) {
	// Until it has passed repeated runs under load (docs/lifecycle-suite.md),
	// `make test` runs it only when asked.
	if os.Getenv("AMBIT_E2E_LIFECYCLE") != "1" && !strings.Contains(flag.Lookup("test.run").Value.String(), "TestLifecycle") {
		t.Skip("runs when named (-run TestLifecycle) or with AMBIT_E2E_LIFECYCLE=1: kept out of the default run until it has passed repeated runs under load (docs/lifecycle-suite.md)")
	}
	opts := cluster.ForAmbit(cluster.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	cluster.SkipIfUnavailable(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	m, r := startMesh(ctx, t, opts)
	ambitImage, chart := r.image, r.chart
	t0 := time.Now()

	steps := []lcStep{
		{"setup", func(m *mesh, ctx context.Context, t *testing.T) {
			m.install(ctx, t, chart, ambitImage)
			m.lcSetup(ctx, t)
		}, true},
		{"pod-delete-permissive", func(m *mesh, ctx context.Context, t *testing.T) {
			m.lcPodDelete(ctx, t, "pod-delete-permissive", false)
		}, false},
		{"pod-delete-strict", func(m *mesh, ctx context.Context, t *testing.T) { m.lcPodDelete(ctx, t, "pod-delete-strict", true) }, false},
		{"pod-evict", func(m *mesh, ctx context.Context, t *testing.T) { m.lcPodDelete(ctx, t, "pod-evict", false) }, false},
		{"daemon-sigkill", (*mesh).lcDaemonKill, false},
		{"daemon-pod-delete", (*mesh).lcDaemonPodDelete, false},
		{"helm-upgrade", func(m *mesh, ctx context.Context, t *testing.T) { m.lcUpgrade(ctx, t, chart) }, false},
		{"apiserver-restart", (*mesh).lcAPIServerRestart, false},
		{"ns-relabel", (*mesh).lcRelabel, false},
		{"create-20", (*mesh).lcCreateMany, false},
	}
	steps = pickEvents(t, steps, os.Getenv("AMBIT_E2E_LIFECYCLE_EVENTS"))
	for _, s := range steps {
		ok := t.Run(s.name, func(t *testing.T) {
			m.t = t
			s.run(m, ctx, t)
		})
		m.t = t
		if !ok {
			m.dumpDaemons(ctx)
			m.lcTidy(ctx)
			if s.must {
				t.FailNow()
			}
		}
	}
	t.Logf("TestLifecycle: %s from the cluster's start", time.Since(t0).Round(time.Second))
}

// lcStep is one event of the suite; must: later events need it.
type lcStep struct {
	name string
	run  func(*mesh, context.Context, *testing.T)
	must bool
}

// pickEvents keeps the steps that must run and, when list is not empty, the
// events it names, in its order and as often as named
// (AMBIT_E2E_LIFECYCLE_EVENTS=helm-upgrade,helm-upgrade repeats one event in
// one cluster).
func pickEvents(t *testing.T, steps []lcStep, list string) []lcStep {
	if list == "" {
		return steps
	}
	var out []lcStep
	byName := map[string]lcStep{}
	for _, s := range steps {
		if s.must {
			out = append(out, s)
		}
		byName[s.name] = s
	}
	for _, n := range strings.Split(list, ",") {
		s, ok := byName[strings.TrimSpace(n)]
		if !ok {
			t.Fatalf("AMBIT_E2E_LIFECYCLE_EVENTS: no event %q", n)
		}
		out = append(out, s)
	}
	return out
}

// lcSetup gives the echo servers the bench port the connection loops use,
// then labels the namespace into the mesh and waits until both running echo
// pods are enrolled.
func (m *mesh) lcSetup(ctx context.Context, t *testing.T) {
	cs := m.c.Clientset()
	d, err := cs.AppsV1().Deployments(meshNS).Get(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Recreate: the pods' required anti-affinity leaves no node for a
	// surge pod, so a rolling update would never start.
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	ctr := &d.Spec.Template.Spec.Containers[0]
	ctr.Args = append(ctr.Args, "-bench-listen", fmt.Sprintf(":%d", lcBenchPort))
	if _, err := cs.AppsV1().Deployments(meshNS).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(ctx, t, 90*time.Second, func() string {
		pods, err := cs.CoreV1().Pods(meshNS).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
		if err != nil {
			return err.Error()
		}
		n := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || !slices.Contains(p.Spec.Containers[0].Args, "-bench-listen") {
				return "old echo pods still present"
			}
			if cluster.PodReady(&p) {
				n++
			}
		}
		if n != 2 {
			return fmt.Sprintf("%d of 2 echo pods with the bench port Ready", n)
		}
		return ""
	})
	m.lcLabel(ctx, t, true)
}

// lcLabel labels (or unlabels) the mesh namespace and waits until each
// daemon reports every running pod of the namespace on its node enrolled,
// or none.
func (m *mesh) lcLabel(ctx context.Context, t *testing.T, on bool) {
	v := "null"
	if on {
		v = `"enabled"`
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, meshLabel, v)
	if _, err := m.c.Clientset().CoreV1().Namespaces().Patch(ctx, meshNS, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(ctx, t, 30*time.Second, func() string {
		pods, err := m.c.Clientset().CoreV1().Pods(meshNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		for _, n := range m.c.Nodes {
			want := 0
			for _, p := range pods.Items {
				if on && p.Spec.NodeName == n.Name && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
					want++
				}
			}
			if got := metricSum(m.scrape(ctx, m.daemonPod(ctx, n.Name)), "ambit_enrolled_pods", nil); got != float64(want) {
				return fmt.Sprintf("daemon on %s reports %v enrolled pods, want %d (labelled: %v)", n.Name, got, want, on)
			}
		}
		return ""
	})
}

// lcTidy removes what a failed event may have left: its client pods, a
// STRICT policy, an unlabelled namespace.
func (m *mesh) lcTidy(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	_, _ = m.c.Kubectl(ctx, "label", "namespace", meshNS, meshLabel+"=enabled", "--overwrite")
	_, _ = m.c.Kubectl(ctx, "delete", "pods", "-n", meshNS, "-l", "role=lifecycle", "--grace-period=0", "--force", "--wait=false")
	_, _ = m.c.Kubectl(ctx, "delete", "peerauthentications.security.ambit.dev", "-n", meshNS, "--all", "--wait=false")
}

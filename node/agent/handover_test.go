package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func daemonPod(owner string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: "ambit-x"}}
	if owner != "" {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: owner}}
	}
	return p
}

func daemonSet(deleting bool) *appsv1.DaemonSet {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: "ambit"}}
	if deleting {
		ds.DeletionTimestamp = &metav1.Time{Time: time.Now()}
		ds.Finalizers = []string{"foregroundDeletion"}
	}
	return ds
}

// The own DaemonSet decides whether a successor comes.
func TestDaemonSetLive(t *testing.T) {
	cases := []struct {
		name    string
		objs    []runtime.Object
		pod     string
		live    bool
		wantErr error
	}{
		{"daemonset exists", []runtime.Object{daemonPod("ambit"), daemonSet(false)}, "ambit-x", true, nil},
		{"daemonset being deleted", []runtime.Object{daemonPod("ambit"), daemonSet(true)}, "ambit-x", false, nil},
		{"daemonset gone", []runtime.Object{daemonPod("ambit")}, "ambit-x", false, nil},
		{"pod without a daemonset", []runtime.Object{daemonPod("")}, "ambit-x", false, errNoDaemonSet},
		{"no pod name", nil, "", false, errNoDaemonSet},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			live, err := daemonSetLive(context.Background(), fake.NewClientset(c.objs...), "ambit-system", c.pod)
			if live != c.live || !errors.Is(err, c.wantErr) {
				t.Fatalf("daemonSetLive = %v, %v; want %v, %v", live, err, c.live, c.wantErr)
			}
		})
	}
	// The pod cannot be read (API down): an error, not "live".
	if live, err := daemonSetLive(context.Background(), fake.NewClientset(), "ambit-system", "ambit-x"); live || err == nil {
		t.Fatalf("unknown pod: %v, %v", live, err)
	}
}

func stoppingAgent(t *testing.T, objs ...runtime.Object) *agent {
	t.Helper()
	cfg := validConfig(t)
	cfg.PodName, cfg.PodNamespace = "ambit-x", "ambit-system"
	a, err := newAgent(Options{Config: cfg, Kube: fake.NewClientset(objs...), HandoverTimeout: 3 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A deleted daemon pod whose DaemonSet remains keeps serving (and keeps the
// CNI entry) until the successor's marker appears, then returns at once.
func TestStoppingWaitsForSuccessor(t *testing.T) {
	a := stoppingAgent(t, daemonPod("ambit"), daemonSet(false))
	owner := filepath.Join(t.TempDir(), ownerFile)
	self := instanceID("ambit-x", time.Now())
	if err := writeOwner(owner, self); err != nil {
		t.Fatal(err)
	}
	uninstalled := false
	done := make(chan time.Time, 1)
	go func() {
		a.stopping(owner, self, func() error { uninstalled = true; return nil })
		done <- time.Now()
	}()
	select {
	case <-done:
		t.Fatal("stopped serving before a successor took over")
	case <-time.After(500 * time.Millisecond):
	}
	marked := time.Now()
	if err := writeOwner(owner, instanceID("ambit-y", time.Now())); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-done:
		if d := at.Sub(marked); d > time.Second {
			t.Errorf("handed over %v after the marker", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("still serving after the successor took over")
	}
	if uninstalled {
		t.Error("CNI entry removed although a successor comes")
	}
}

// Without a successor the wait ends at HandoverTimeout.
func TestStoppingWithoutSuccessorTimesOut(t *testing.T) {
	a := stoppingAgent(t, daemonPod("ambit"), daemonSet(false))
	a.o.HandoverTimeout = 300 * time.Millisecond
	owner := filepath.Join(t.TempDir(), ownerFile)
	start := time.Now()
	a.stopping(owner, "me", func() error { t.Error("CNI entry removed"); return nil })
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("stopping took %v, want about the handover timeout", d)
	}
}

// A release being removed takes ambit-cni out at once (unless told to keep it).
func TestStoppingUninstallsWhenReleaseGone(t *testing.T) {
	for _, keep := range []bool{false, true} {
		a := stoppingAgent(t, daemonPod("ambit"), daemonSet(true))
		a.cfg.CNIKeepOnStop = keep
		uninstalled := false
		start := time.Now()
		a.stopping(filepath.Join(t.TempDir(), ownerFile), "me", func() error { uninstalled = true; return nil })
		if uninstalled == keep {
			t.Errorf("keep %v: uninstalled %v", keep, uninstalled)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("keep %v: waited %v for a successor that will not come", keep, d)
		}
	}
}

// A daemon whose RBAC is already gone (helm uninstall deletes it too) knows
// the release is going and does not wait for the API to say more.
func TestStoppingWithRBACGone(t *testing.T) {
	a := stoppingAgent(t)
	a.o.Kube.(*fake.Clientset).PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "ambit-x", errors.New("RBAC: role gone"))
	})
	uninstalled := false
	start := time.Now()
	a.stopping(filepath.Join(t.TempDir(), ownerFile), "me", func() error { uninstalled = true; return nil })
	if !uninstalled {
		t.Error("CNI entry kept although the release's RBAC is gone")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
}

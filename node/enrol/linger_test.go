package enrol

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/node/dataplane"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/redirect"
)

var webID = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")

func (fx *fixture) refsOf(id spiffeid.ID) int {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return fx.refs[id]
}

func (fx *fixture) leaving(pod string) bool {
	for _, v := range fx.e.Snapshot() {
		if v.Pod == pod {
			return v.Leaving
		}
	}
	return false
}

// newNetns creates another file standing in for a pod network namespace.
func (fx *fixture) newNetns(name string) string {
	p := filepath.Join(fx.t.TempDir(), name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		fx.t.Fatal(err)
	}
	return p
}

// A pod being deleted keeps its capture, data path and certificate through
// its graceful shutdown and after the API server forgets it, until its
// network namespace goes: its app's last connections still leave over
// HBONE, never in the clear.
func TestDeletedPodStaysCapturedUntilNetnsGone(t *testing.T) {
	for _, how := range []string{"deleted", "finished"} {
		t.Run(how, func(t *testing.T) {
			fx := newFixture(t)
			fx.tables.label("shop", true)
			fx.tables.set(workload("shop", "web-1", "u1"))
			if _, err := fx.add(fx.cniPod("shop", "web-1", "u1", "c1")); err != nil {
				t.Fatal(err)
			}
			// kubectl delete pod: the deletion timestamp is set, the app
			// shuts down gracefully; the tables keep it enrolled.
			w := workload("shop", "web-1", "u1", ipA)
			w.Terminating = true
			w = fx.tables.set(w)
			fx.e.queue.Add(tables.Event{Type: tables.Enrol, Workload: w})
			if how == "finished" {
				w.IPs, w.Enrolled = nil, false
				fx.tables.set(w)
			} else {
				fx.tables.mu.Lock()
				delete(fx.tables.pods, "shop/web-1")
				fx.tables.mu.Unlock()
			}
			fx.e.queue.Add(tables.Event{Type: tables.Release, Workload: w})
			fx.settle(func() bool { return fx.idle() && fx.leaving("shop/web-1") }, "pod marked leaving")
			if got := fx.capture.ids(); !slices.Equal(got, []string{"c1"}) || len(fx.capture.removed) != 0 {
				t.Fatalf("capture %v (removed %v): released while its sandbox runs", got, fx.capture.removed)
			}
			if _, ok := fx.data.spec("c1"); !ok {
				t.Fatal("data path stopped while the sandbox runs")
			}
			if n := fx.refsOf(webID); n != 1 {
				t.Fatalf("certificate references %d, want 1", n)
			}
			// A resync does not release it either.
			fx.e.markAll()
			fx.settle(fx.idle, "resync handled")
			if got := fx.capture.ids(); !slices.Equal(got, []string{"c1"}) {
				t.Fatalf("capture after resync %v", got)
			}
			// The runtime removes the sandbox's namespace without a CNI DEL
			// reaching the daemon: the periodic check releases it.
			if err := os.Remove(fx.netns); err != nil {
				t.Fatal(err)
			}
			fx.settle(func() bool { return fx.e.EnrolledCount() == 0 }, "released once the netns is gone")
			if got := fx.capture.ids(); len(got) != 0 {
				t.Fatalf("capture left %v", got)
			}
			if _, ok := fx.data.spec("c1"); ok {
				t.Fatal("data path left")
			}
			if n := fx.refsOf(webID); n != 0 {
				t.Fatalf("certificate references %d after release", n)
			}
		})
	}
}

// A namespace replaced by another at the same path (inode changed) counts
// as gone; CNI DEL of a leaving pod releases it at once.
func TestLeavingPodReleasedByDelOrNewNetns(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	fx.tables.set(workload("shop", "web-1", "u1"))
	fx.tables.set(workload("shop", "web-2", "u2"))
	if _, err := fx.add(fx.cniPod("shop", "web-1", "u1", "c1")); err != nil {
		t.Fatal(err)
	}
	p2 := fx.cniPod("shop", "web-2", "u2", "c2")
	p2.NetnsPath = fx.newNetns("cni-2")
	if _, err := fx.add(p2); err != nil {
		t.Fatal(err)
	}
	fx.tables.mu.Lock()
	fx.tables.pods = map[string]tables.Workload{}
	fx.tables.mu.Unlock()
	fx.e.markAll()
	fx.settle(func() bool { return fx.idle() && fx.leaving("shop/web-1") && fx.leaving("shop/web-2") }, "both leaving")
	if err := fx.e.Del(context.Background(), "c2"); err != nil {
		t.Fatal(err)
	}
	if got := fx.capture.ids(); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("after DEL of c2: capture %v", got)
	}
	// Same path, another namespace (created while the old one exists, so
	// it cannot reuse its inode number).
	if err := os.WriteFile(fx.netns+".new", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fx.netns+".new", fx.netns); err != nil {
		t.Fatal(err)
	}
	fx.settle(func() bool { return fx.e.EnrolledCount() == 0 }, "released: its path names another namespace")
}

// Opting out (the pod runs on, not terminating) still releases at once.
func TestOptOutReleasesAtOnce(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	fx.tables.set(workload("shop", "web-1", "u1"))
	if _, err := fx.add(fx.cniPod("shop", "web-1", "u1", "c1")); err != nil {
		t.Fatal(err)
	}
	w := workload("shop", "web-1", "u1", ipA)
	w.Eligible = false
	w = fx.tables.set(w)
	fx.e.queue.Add(tables.Event{Type: tables.Release, Workload: w})
	fx.settle(func() bool { return fx.e.EnrolledCount() == 0 }, "released")
	if got := fx.capture.ids(); len(got) != 0 {
		t.Fatalf("capture %v", got)
	}
}

// After a daemon restart, a recorded capture whose pod the API no longer
// runs but whose namespace exists keeps its capture: with its data path
// rebuilt from the enroller's record, or with none (fail closed) when there
// is no record. Pods that opted out, and pods whose namespace is gone, lose
// theirs.
func TestRecoverKeepsLeavingPods(t *testing.T) {
	fx := newFixture(t)
	fx.tables.label("shop", true)
	ipB, ipC, ipD := netip.MustParseAddr("10.250.0.6"), netip.MustParseAddr("10.250.0.7"), netip.MustParseAddr("10.250.0.8")
	// A previous process enrolled web-2 (recorded) and then the API forgot it.
	fx.tables.set(workload("shop", "web-2", "u2"))
	p2 := fx.cniPod("shop", "web-2", "u2", "c2")
	p2.NetnsPath, p2.IPs = fx.newNetns("cni-2"), []netip.Addr{ipB}
	if _, err := fx.add(p2); err != nil {
		t.Fatal(err)
	}
	prev := fx.e
	fx.e = New(prev.cfg) // the restarted daemon
	fx.data.pods = map[string]dataplane.PodSpec{}
	fx.tables.mu.Lock()
	fx.tables.pods = map[string]tables.Workload{}
	fx.tables.mu.Unlock()
	fx.refs = map[spiffeid.ID]int{}

	fx.tables.set(workload("shop", "web-1", "u1", ipA)) // still running
	out := workload("shop", "out", "u4", ipD)           // opted out while no daemon ran
	out.Eligible = false
	fx.tables.set(out)
	ns3 := fx.newNetns("cni-3")
	recorded := []redirect.PodNetns{
		{ID: "c1", NetnsPath: fx.netns, Addresses: []netip.Addr{ipA}},
		{ID: "c2", NetnsPath: p2.NetnsPath, Addresses: []netip.Addr{ipB}},
		{ID: "c3", NetnsPath: ns3, Addresses: []netip.Addr{ipC}}, // no record
		{ID: "c4", NetnsPath: fx.newNetns("cni-4"), Addresses: []netip.Addr{ipD}},
		{ID: "c9", NetnsPath: filepath.Join(t.TempDir(), "gone"), Addresses: []netip.Addr{netip.MustParseAddr("10.250.0.9")}},
	}
	for _, p := range recorded {
		fx.capture.applied[p.ID] = p
	}
	err := fx.e.Recover(context.Background(), recorded, func(context.Context) ([]redirect.PodNetns, error) {
		var out []redirect.PodNetns
		for _, p := range recorded {
			if _, ok := fx.capture.applied[p.ID]; ok {
				out = append(out, p)
			}
		}
		return out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fx.capture.ids(), []string{"c1", "c2", "c3"}; !slices.Equal(got, want) {
		t.Fatalf("capture %v, want %v", got, want)
	}
	if s, ok := fx.data.spec("c2"); !ok || s.Identity != webID || s.Workload.Name != "web-2" || !slices.Equal(s.Addrs, []netip.Addr{ipB}) {
		t.Fatalf("data path of the leaving pod from its record: %+v %v", s, ok)
	}
	if _, ok := fx.data.spec("c3"); ok {
		t.Fatal("data path for a pod whose identity is unknown")
	}
	if n := fx.refsOf(webID); n != 2 {
		t.Fatalf("certificate references %d, want 2 (web-1, web-2)", n)
	}
	// Both leaving pods are released once their namespaces go.
	os.Remove(p2.NetnsPath)
	os.Remove(ns3)
	fx.settle(func() bool { return fx.e.EnrolledCount() == 1 }, "leaving pods released")
	if got := fx.capture.ids(); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("capture %v, want [c1]", got)
	}
	if n := fx.refsOf(webID); n != 1 {
		t.Fatalf("certificate references %d, want 1", n)
	}
	if ents, _ := os.ReadDir(fx.e.cfg.StateDir); len(ents) != 1 {
		t.Fatalf("records left: %d, want 1 (web-1)", len(ents))
	}
}

package dataplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/node/authz"
)

// TestNode: pods are started, kept when unchanged, restarted when changed,
// removed, and all stopped by Close.
func TestNode(t *testing.T) {
	e := newFakeEnv(t)
	if _, err := NewNode(NodeConfig{}); !errors.Is(err, ErrConfig) {
		t.Errorf("NewNode without config = %v, want ErrConfig", err)
	}
	n, err := NewNode(NodeConfig{Capture: e.fc, Router: e.router, Authorizer: e.engine, SVIDs: e.svids,
		Bundles: e.ca.Bundle(), Hooks: e.hooks.hooks(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	specA := PodSpec{PodID: "a", Identity: e.idA, Addrs: []netip.Addr{e.ipA},
		Workload: authz.Workload{Namespace: "demo", Name: "a", Labels: map[string]string{"app": "a"}}}
	specB := PodSpec{PodID: "b", Identity: e.idB, Addrs: []netip.Addr{e.ipB},
		Workload: authz.Workload{Namespace: "demo", Name: "b"}}
	for _, s := range []PodSpec{specA, specB} {
		if err := n.Set(ctx, s); err != nil {
			t.Fatalf("Set %s: %v", s.PodID, err)
		}
	}
	if err := n.Set(ctx, PodSpec{PodID: "c"}); !errors.Is(err, ErrConfig) {
		t.Errorf("Set of an invalid spec = %v, want ErrConfig", err)
	}
	if got := n.PodIDs(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("PodIDs = %v", got)
	}
	c := e.captured(t, e.appB)
	if err := roundTrip(c, "via node"); err != nil {
		t.Fatalf("A -> B through the node: %v", err)
	}
	c.Close()

	first := n.Pod("a")
	if err := n.Set(ctx, specA); err != nil || n.Pod("a") != first {
		t.Errorf("unchanged spec: err %v, restarted %v", err, n.Pod("a") != first)
	}
	specA.Workload.Labels = map[string]string{"app": "a", "version": "2"}
	if err := n.Set(ctx, specA); err != nil || n.Pod("a") == first {
		t.Errorf("changed spec: err %v, restarted %v", err, n.Pod("a") != first)
	}
	c = e.captured(t, e.appB)
	if err := roundTrip(c, "after restart"); err != nil {
		t.Errorf("A -> B after the restart: %v", err)
	}
	c.Close()
	// Both pods are the Node's: the same-node shortcut carries it.
	if s := n.Pod("a").Stats(); s.OutboundLocal != 1 {
		t.Errorf("restarted pod stats %+v, want the connection on the new data path", s)
	}
	if s := n.Pod("b").Stats(); s.InboundLocal != 2 {
		t.Errorf("B stats %+v, want both connections through the shortcut", s)
	}

	if err := n.Remove(ctx, "a"); err != nil || n.Pod("a") != nil {
		t.Errorf("Remove: %v, pod %v", err, n.Pod("a"))
	}
	if err := n.Remove(ctx, "a"); err != nil {
		t.Errorf("Remove of an unknown pod: %v", err)
	}
	if err := n.Close(ctx); err != nil || len(n.PodIDs()) != 0 {
		t.Errorf("Close: %v, pods %v", err, n.PodIDs())
	}
}

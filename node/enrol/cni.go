package enrol

import (
	"context"
	"fmt"
	"time"

	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/cnimsg"
)

// Enrol decides a CNI ADD/CHECK: the pod is captured when it is eligible and
// its namespace is enrolled. The tables must have synced (and policies be
// loaded) first, and the pod must be known: the kubelet only starts
// sandboxes of pods the API server has, so an unknown pod in an enrolled
// namespace means the watch lags, and the ADD fails to be retried rather
// than start the pod uncaptured.
func (e *Enroller) Enrol(ctx context.Context, p cnimsg.Pod) (bool, error) {
	e.mu.Lock()
	e.sandboxes[podKey(p)] = p
	e.byCID[p.ContainerID] = podKey(p)
	e.mu.Unlock()
	if err := e.cfg.Synced(ctx); err != nil {
		return false, fmt.Errorf("waiting for the cluster state: %w", err)
	}
	deadline := time.Now().Add(e.cfg.UnknownPodWait)
	for {
		w, ok := e.cfg.Tables.Pod(p.Namespace, p.Name)
		if ok && (p.UID == "" || w.UID == p.UID) {
			return w.Eligible && e.cfg.Tables.NamespaceEnrolled(p.Namespace), nil
		}
		if !e.cfg.Tables.NamespaceEnrolled(p.Namespace) {
			// Whatever the pod turns out to be, its namespace is not in
			// the mesh; if it is labelled later, the pod is enrolled
			// while it runs.
			return false, nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("pod %s/%s (uid %s) is not in the node's view of the cluster yet", p.Namespace, p.Name, p.UID)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Apply enrols the pod of a CNI ADD: capture, certificate, data path, in
// that order, undone if a later step fails (the ADD then fails and the
// runtime retries).
func (e *Enroller) Apply(ctx context.Context, pod redirect.PodNetns, desired redirect.Config) error {
	e.mu.Lock()
	uid, ok := e.byCID[pod.ID]
	sb := e.sandboxes[uid]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("container %s: no enrolment decision recorded", pod.ID)
	}
	unlock := e.lock(uid)
	defer unlock()
	w, ok := e.cfg.Tables.Pod(sb.Namespace, sb.Name)
	if !ok {
		return fmt.Errorf("pod %s/%s vanished from the node's view", sb.Namespace, sb.Name)
	}
	if cur := e.current(uid); cur != nil && cur.CaptureID != pod.ID {
		// A new sandbox of the same pod: the old one's capture goes first.
		if err := e.release(ctx, uid, cur); err != nil {
			return err
		}
	}
	return e.enrol(ctx, uid, pod, desired, w, pod.Addresses, "cni")
}

// Check verifies a CNI CHECK against the kernel state.
func (e *Enroller) Check(ctx context.Context, pod redirect.PodNetns, desired redirect.Config) error {
	return e.cfg.Capture.Check(ctx, pod, desired)
}

// Remove handles a CNI DEL: the pod's data path and capture go. A sandbox
// this process never enrolled still has its capture state removed (it may
// be a previous process's).
func (e *Enroller) Remove(ctx context.Context, pod redirect.PodNetns) error {
	e.mu.Lock()
	uid, ok := e.byCapture[pod.ID]
	if cu, cok := e.byCID[pod.ID]; cok {
		if sb := e.sandboxes[cu]; sb.ContainerID == pod.ID {
			delete(e.sandboxes, cu)
		}
		delete(e.byCID, pod.ID)
	}
	e.mu.Unlock()
	if !ok {
		return e.cfg.Capture.Remove(ctx, pod)
	}
	unlock := e.lock(uid)
	defer unlock()
	if cur := e.current(uid); cur != nil && cur.CaptureID == pod.ID {
		return e.release(ctx, uid, cur)
	}
	return nil
}

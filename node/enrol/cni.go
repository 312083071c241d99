package enrol

import (
	"context"
	"fmt"
	"time"

	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/cnimsg"
	"github.com/ambit-mesh/ambit/redirect/cniserver"
)

// The CNI side: Enroller is the cniserver.Enroller of the daemon's socket.
var _ cniserver.Enroller = (*Enroller)(nil)

// Add handles a CNI ADD: when the pod belongs in the mesh (decide), it is
// enrolled before Add returns: certificate, capture, data path, in that
// order, undone if a later step fails (the ADD then fails and the runtime
// retries). A new sandbox of an enrolled pod replaces the old one's.
func (e *Enroller) Add(ctx context.Context, pod cniserver.Pod) (bool, error) {
	if ok, err := e.decide(ctx, pod.Pod); err != nil || !ok {
		return false, err
	}
	uid := podKey(pod.Pod)
	unlock := e.lock(uid)
	defer unlock()
	w, ok := e.cfg.Tables.Pod(pod.Namespace, pod.Name)
	if !ok {
		return false, fmt.Errorf("pod %s/%s vanished from the node's view", pod.Namespace, pod.Name)
	}
	if cur := e.current(uid); cur != nil && cur.CaptureID != pod.Netns.ID {
		// A new sandbox of the same pod: the old one's capture goes first.
		if err := e.release(ctx, uid, cur); err != nil {
			return false, err
		}
	}
	if err := e.enrol(ctx, uid, pod.Netns, pod.Capture, w, pod.Netns.Addresses, "cni"); err != nil {
		return false, err
	}
	return true, nil
}

// Check handles a CNI CHECK: the capture of a pod in the mesh is verified
// against the kernel state.
func (e *Enroller) Check(ctx context.Context, pod cniserver.Pod) (bool, error) {
	if ok, err := e.decide(ctx, pod.Pod); err != nil || !ok {
		return false, err
	}
	return true, e.cfg.Capture.Check(ctx, pod.Netns, pod.Capture)
}

// Del handles a CNI DEL: the pod's data path and capture go. A sandbox
// this process never enrolled still has its capture state removed (it may
// be a previous process's).
func (e *Enroller) Del(ctx context.Context, containerID string) error {
	e.mu.Lock()
	uid, ok := e.byCapture[containerID]
	for k, sb := range e.sandboxes {
		if sb.ContainerID == containerID {
			delete(e.sandboxes, k)
		}
	}
	e.mu.Unlock()
	if !ok {
		return e.cfg.Capture.Remove(ctx, redirect.PodNetns{ID: containerID})
	}
	unlock := e.lock(uid)
	defer unlock()
	if cur := e.current(uid); cur != nil && cur.CaptureID == containerID {
		return e.release(ctx, uid, cur)
	}
	return nil
}

// decide records the sandbox (a running pod's later enrolment uses it) and
// decides whether the pod is captured: it is when it is eligible and its
// namespace is enrolled. The tables must have synced (and policies be
// loaded) first, and the pod must be known: the kubelet only starts
// sandboxes of pods the API server has, so an unknown pod in an enrolled
// namespace means the watch lags, and the ADD fails to be retried rather
// than start the pod uncaptured.
func (e *Enroller) decide(ctx context.Context, p cnimsg.Pod) (bool, error) {
	e.mu.Lock()
	e.sandboxes[podKey(p)] = p
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

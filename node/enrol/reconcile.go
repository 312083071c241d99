package enrol

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/redirect"
)

// Run reconciles marked pods until ctx ends; every Resync it marks every
// pod the tables enrol on this node and every pod it has enrolled, and
// every NetnsCheck it releases the pods whose network namespace is gone.
func (e *Enroller) Run(ctx context.Context) {
	tick := time.NewTicker(e.cfg.Resync)
	defer tick.Stop()
	nsTick := time.NewTicker(e.cfg.NetnsCheck)
	defer nsTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			e.markAll()
		case <-nsTick.C:
			e.releaseGone(ctx)
			continue
		case <-e.queue.wake:
		}
		work := e.queue.take()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for uid, w := range work {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				e.reconcileOne(ctx, uid, w)
			}()
		}
		wg.Wait()
	}
}

// markAll marks every pod the tables enrol here and every enrolled pod.
func (e *Enroller) markAll() {
	for _, w := range e.cfg.Tables.LocalEnrolled() {
		e.queue.mark(w)
	}
	e.mu.Lock()
	var ws []tables.Workload
	for uid, p := range e.pods {
		ws = append(ws, tables.Workload{UID: uid, Namespace: p.Namespace, Name: p.Name})
	}
	e.mu.Unlock()
	for _, w := range ws {
		e.queue.mark(w)
	}
}

func (e *Enroller) reconcileOne(ctx context.Context, uid string, hint tables.Workload) {
	err := e.reconcile(ctx, uid, hint)
	if err != nil && ctx.Err() != nil {
		// Cut short by the stop: the pod stays marked (unless marked again
		// meanwhile) for the next Run instead of waiting for a resync.
		e.queue.keep(uid, hint)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		delete(e.failing, uid)
		return
	}
	e.failures.Add(1)
	e.failing[uid] = hint.Namespace + "/" + hint.Name + ": " + err.Error()
	e.log.Warn("enrolment: reconcile failed, retrying", "pod", hint.Namespace+"/"+hint.Name, "err", err)
	time.AfterFunc(e.cfg.Retry, func() { e.queue.mark(hint) })
}

// reconcile makes one pod's capture and data path match the tables.
func (e *Enroller) reconcile(ctx context.Context, uid string, hint tables.Workload) error {
	unlock := e.lock(uid)
	defer unlock()
	w, ok := e.cfg.Tables.Pod(hint.Namespace, hint.Name)
	same := ok && w.UID == uid && w.Node == e.cfg.LocalNode
	want := same && w.Enrolled
	cur := e.current(uid)
	if cur != nil && cur.NoData {
		// Recovered without an identity: only its sandbox going ends it.
		return e.lingerOrRelease(ctx, uid, cur)
	}
	switch {
	case cur != nil && !want && (!same || w.Terminating):
		// Deleted, finished, or replaced by a new pod of the same name:
		// not a decision to leave the mesh.
		return e.lingerOrRelease(ctx, uid, cur)
	case want && cur != nil:
		// Still enrolled: labels or addresses may have changed (Set is a
		// no-op when nothing did).
		spec, err := e.spec(cur.CaptureID, w, cur.Spec.Addrs)
		if err != nil {
			return err
		}
		if err := e.cfg.Data.Set(ctx, spec); err != nil {
			return err
		}
		e.mu.Lock()
		cur.Spec = spec
		e.mu.Unlock()
		return nil
	case want:
		return e.enrolRunning(ctx, uid, w)
	case cur != nil && w.Eligible && e.cfg.Tables.NamespaceEnrolled(w.Namespace):
		// Captured at its CNI ADD, but not live in the node's view yet
		// (no address reported, or the watch lags the kubelet): it has not
		// left the mesh, and releasing it would let its first connections
		// out in the clear.
		return nil
	case cur != nil:
		return e.release(ctx, uid, cur)
	}
	return nil
}

// enrolRunning enrols a pod that is already running: its namespace is the
// one its CNI ADD reported, or else found by its address.
func (e *Enroller) enrolRunning(ctx context.Context, uid string, w tables.Workload) error {
	if e.cfg.Superseded != nil && e.cfg.Superseded() {
		return ErrSuperseded
	}
	e.mu.Lock()
	sb, known := e.sandboxes[uid]
	e.mu.Unlock()
	var pod redirect.PodNetns
	var gateways []netip.Addr
	if known && sb.NetnsPath != "" && len(sb.IPs) > 0 {
		pod = redirect.PodNetns{ID: sb.ContainerID, NetnsPath: sb.NetnsPath, Interface: sb.Interface, Addresses: sb.IPs}
		gateways = sb.Gateways
	} else {
		if len(w.IPs) == 0 {
			return errors.New("running pod without an address")
		}
		f, err := e.cfg.FindPod(w.IPs[0])
		if err != nil {
			return err
		}
		pod = redirect.PodNetns{ID: "netns-" + filepath.Base(f.NetnsPath), NetnsPath: f.NetnsPath, Interface: f.Interface, Addresses: f.Addresses}
		gateways = f.Gateways
	}
	ns, err := os.Open(pod.NetnsPath)
	if err != nil {
		return fmt.Errorf("pod netns: %w", err)
	}
	defer ns.Close()
	pod.Netns = ns
	desired := probeConfig(gateways)
	if host, err := e.cfg.HostPeer(ns, pod.Interface); err == nil {
		pod.HostInterface = host
	} else if len(desired.ProbeSources) > 0 {
		e.log.Warn("enrolment: no host-side peer found; kubelet probes will be captured", "pod", w.Namespace+"/"+w.Name, "err", err)
		desired.ProbeSources = nil
	}
	return e.enrol(ctx, uid, pod, desired, w, pod.Addresses, "running")
}

// probeConfig is the capture config of a pod whose kubelet probes come from
// its gateways (the node's address on the pod network).
func probeConfig(gateways []netip.Addr) redirect.Config {
	var c redirect.Config
	for _, g := range gateways {
		if len(c.ProbeSources) < 4 && g.IsValid() {
			c.ProbeSources = append(c.ProbeSources, g)
		}
	}
	return c
}

// enrol fetches the certificate, applies capture and starts the data path;
// a failed step undoes the earlier ones. Called with the pod's lock held.
func (e *Enroller) enrol(ctx context.Context, uid string, pod redirect.PodNetns, desired redirect.Config, w tables.Workload, addrs []netip.Addr, via string) error {
	spec, err := e.spec(pod.ID, w, addrs)
	if err != nil {
		return err
	}
	// The certificate first: once capture is applied, a running pod's
	// connections are steered to this process, and the time until its data
	// path serves them must not include a round trip to the CA.
	actx, cancel := context.WithTimeout(ctx, e.cfg.CertWait)
	err = e.cfg.Acquire(actx, spec.Identity)
	cancel()
	if errors.Is(err, identity.ErrNoCertificate) {
		err = fmt.Errorf("certificate for identity %s is waiting on the CA: %w", spec.Identity, err)
		e.log.Warn("enrolment: "+err.Error(), "pod", w.Namespace+"/"+w.Name, "via", via)
		return err
	}
	if err != nil {
		return fmt.Errorf("certificate for %s: %w", spec.Identity, err)
	}
	if err := e.cfg.Capture.Apply(ctx, pod, desired); err != nil {
		e.cfg.Release(spec.Identity)
		return fmt.Errorf("apply capture: %w", err)
	}
	if err := e.cfg.Data.Set(ctx, spec); err != nil {
		e.cfg.Release(spec.Identity)
		if rerr := e.cfg.Capture.Remove(context.WithoutCancel(ctx), redirect.PodNetns{ID: pod.ID}); rerr != nil {
			e.log.Error("enrolment: undo capture", "pod", w.Namespace+"/"+w.Name, "err", rerr)
		}
		return fmt.Errorf("data path: %w", err)
	}
	ref := netnsOf(pod)
	e.mu.Lock()
	e.pods[uid] = &enrolledPod{CaptureID: pod.ID, Namespace: w.Namespace, Name: w.Name, Spec: spec, Via: via, Since: time.Now(), Netns: ref}
	e.byCapture[pod.ID] = uid
	delete(e.failing, uid)
	e.mu.Unlock()
	e.writeRecord(podRecord{CaptureID: pod.ID, UID: uid, Namespace: w.Namespace, Name: w.Name,
		ServiceAccount: w.ServiceAccount, Labels: w.Labels.Map(), Addresses: spec.Addrs})
	e.enrolls.Add(1)
	e.log.Info("pod enrolled", "pod", w.Namespace+"/"+w.Name, "identity", spec.Identity.String(), "via", via, "capture", pod.ID, "ips", fmt.Sprint(addrs))
	return nil
}

// release removes capture first (new connections go plaintext at once),
// then stops the data path, letting live connections drain for
// ReleaseGrace. Called with the pod's lock held, only when the pod left
// the mesh on purpose or its sandbox is gone.
func (e *Enroller) release(ctx context.Context, uid string, cur *enrolledPod) error {
	if err := e.cfg.Capture.Remove(ctx, redirect.PodNetns{ID: cur.CaptureID}); err != nil {
		return fmt.Errorf("remove capture: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, e.cfg.ReleaseGrace)
	err := e.cfg.Data.Remove(dctx, cur.CaptureID)
	cancel()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		e.log.Warn("enrolment: data path stop", "pod", cur.Namespace+"/"+cur.Name, "err", err)
	}
	e.mu.Lock()
	delete(e.pods, uid)
	delete(e.byCapture, cur.CaptureID)
	e.mu.Unlock()
	e.removeRecord(cur.CaptureID)
	if !cur.NoData {
		e.cfg.Release(cur.Spec.Identity)
	}
	e.releases.Add(1)
	e.log.Info("pod released", "pod", cur.Namespace+"/"+cur.Name, "capture", cur.CaptureID, "leaving", cur.Leaving)
	return nil
}

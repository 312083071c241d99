package enrol

import (
	"context"
	"sync"
	"time"

	"github.com/ambit-mesh/ambit/redirect"
)

// adoptee is a recorded capture the new process takes over.
type adoptee struct {
	uid, ns, name, sa string
	labels            map[string]string
	leaving, noData   bool
}

// Recover takes over the pods a previous process captured. recorded is
// what it left (redirect.Manager.Recorded); takeover moves the capture of
// all of them to this process (redirect.Manager.Recover) and returns the
// pods it re-applied. Before the takeover, the certificate of every pod to
// adopt is obtained: from the moment its connections land on this process,
// its data path must be able to handshake. (During a rolling upgrade the
// old daemon keeps serving until then; while the CA is unreachable this
// waits, and readiness says so.)
//
// A recorded pod the tables still run here is adopted; one that opted out
// or whose namespace was unlabelled (it still runs) loses its capture; one
// whose network namespace is gone loses it too. One that is terminating,
// finished or gone from the API while its namespace still exists keeps its
// capture until the namespace goes, with the data path rebuilt from the
// enroller's record, or none (connections fail, never plaintext) if there
// is no record. Afterwards every enrolled pod is marked, so pods labelled
// while no daemon ran are enrolled too.
func (e *Enroller) Recover(ctx context.Context, recorded []redirect.PodNetns, takeover func(context.Context) ([]redirect.PodNetns, error)) error {
	adopt := map[string]*adoptee{} // capture ID -> what it is
	for _, p := range recorded {
		if netnsMissing(p.NetnsPath) {
			e.log.Info("recovery: capture of a pod whose sandbox is gone removed", "capture", p.ID)
			e.dropCapture(ctx, p.ID)
			continue
		}
		if a := e.classify(p); a != nil {
			adopt[p.ID] = a
		} else {
			e.log.Info("recovery: capture of a pod no longer in the mesh removed", "capture", p.ID)
			e.dropCapture(ctx, p.ID)
		}
	}
	// Certificates first, in parallel (one identity may serve many pods).
	var wg sync.WaitGroup
	acquired := make(map[string]bool, len(adopt))
	var amu sync.Mutex
	for id, a := range adopt {
		if a.noData {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			spec, err := e.specOf(id, a.ns, a.name, a.sa, a.labels, nil)
			if err == nil {
				err = e.cfg.Acquire(ctx, spec.Identity)
			}
			if err != nil {
				e.log.Warn("recovery: certificate", "pod", a.ns+"/"+a.name, "err", err)
				return
			}
			amu.Lock()
			acquired[id] = true
			amu.Unlock()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	recovered, err := takeover(ctx)
	if err != nil {
		e.log.Error("capture recovery incomplete", "err", err)
	}
	for _, p := range recovered {
		a, ok := adopt[p.ID]
		if !ok {
			continue // removed above
		}
		e.adopt(ctx, p, a, acquired[p.ID])
		delete(acquired, p.ID)
	}
	// Certificates of pods the takeover did not return are not held.
	for id := range acquired {
		a := adopt[id]
		if spec, err := e.specOf(id, a.ns, a.name, a.sa, a.labels, nil); err == nil {
			e.cfg.Release(spec.Identity)
		}
	}
	e.markAll()
	return nil
}

// classify decides what a recorded capture is (nil: drop its capture).
func (e *Enroller) classify(p redirect.PodNetns) *adoptee {
	rec, hasRec := e.readRecord(p.ID)
	for _, addr := range p.Addresses {
		w, ok := e.cfg.Tables.Lookup(addr)
		if !ok || w.Node != e.cfg.LocalNode || (hasRec && rec.UID != "" && rec.UID != w.UID) {
			continue
		}
		switch {
		case w.Enrolled:
			return &adoptee{uid: w.UID, ns: w.Namespace, name: w.Name, sa: w.ServiceAccount, labels: w.Labels.Map(), leaving: w.Terminating}
		case !w.Terminating:
			return nil // opted out or unlabelled while no daemon ran
		}
	}
	// Not run by the API any more, but its sandbox is still here.
	if hasRec {
		uid := rec.UID
		if uid == "" {
			uid = "capture:" + p.ID
		}
		return &adoptee{uid: uid, ns: rec.Namespace, name: rec.Name, sa: rec.ServiceAccount, labels: rec.Labels, leaving: true}
	}
	return &adoptee{uid: "capture:" + p.ID, name: p.ID, leaving: true, noData: true}
}

// adopt records a recovered pod with its data path (or none, failing
// closed).
func (e *Enroller) adopt(ctx context.Context, p redirect.PodNetns, a *adoptee, certified bool) {
	unlock := e.lock(a.uid)
	defer unlock()
	ep := &enrolledPod{CaptureID: p.ID, Namespace: a.ns, Name: a.name, Via: "recovered", Since: time.Now(),
		Netns: netnsOf(redirect.PodNetns{NetnsPath: p.NetnsPath}), Leaving: a.leaving, NoData: true}
	if !a.noData && certified {
		spec, err := e.specOf(p.ID, a.ns, a.name, a.sa, a.labels, p.Addresses)
		if err == nil {
			err = e.cfg.Data.Set(ctx, spec)
		}
		if err != nil {
			e.cfg.Release(spec.Identity)
			e.log.Warn("recovery: data path", "pod", a.ns+"/"+a.name, "err", err)
			if !a.leaving {
				return // retried by the reconcile after recovery
			}
		} else {
			ep.Spec, ep.NoData = spec, false
		}
	}
	if ep.NoData && !a.leaving {
		return // no certificate yet: retried by the reconcile after recovery
	}
	e.mu.Lock()
	e.pods[a.uid] = ep
	e.byCapture[p.ID] = a.uid
	e.mu.Unlock()
	if !ep.NoData {
		e.writeRecord(podRecord{CaptureID: p.ID, UID: a.uid, Namespace: a.ns, Name: a.name, ServiceAccount: a.sa,
			Labels: a.labels, Addresses: ep.Spec.Addrs})
	}
	e.log.Info("recovery: pod adopted", "pod", a.ns+"/"+a.name, "capture", p.ID, "leaving", a.leaving, "data_path", !ep.NoData)
}

// dropCapture removes a recorded capture and its record.
func (e *Enroller) dropCapture(ctx context.Context, id string) {
	if err := e.cfg.Capture.Remove(ctx, redirect.PodNetns{ID: id}); err != nil {
		e.log.Warn("recovery: remove capture", "capture", id, "err", err)
	}
	e.removeRecord(id)
}

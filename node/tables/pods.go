package tables

import (
	"errors"
	"fmt"
	"net/netip"
	"unique"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
)

// workload is the compact record of one pod. Strings that repeat across
// pods (namespace, service account, node, labels) are interned.
type workload struct {
	ns, sa, node unique.Handle[string]
	name, uid    string
	labels       Labels
	// id is the pod's SPIFFE identity, shared by the pods of a service
	// account (zero if namespace or service account cannot form one).
	id          spiffeid.ID
	ips         []netip.Addr
	hostNetwork bool
	// eligible: not opted out, not hostNetwork, not ambit itself.
	eligible bool
	// live: has an address and has not finished (Succeeded/Failed). A pod
	// being deleted (graceful shutdown) is still live: its app runs and
	// must keep talking over HBONE.
	live bool
	// terminating: being deleted or finished (see Workload.Terminating).
	terminating bool
	// local: scheduled on this node.
	local bool
	// enrolled is maintained for local pods only: the state last announced
	// with an Enrol/Release event.
	enrolled bool
}

// Workload is a copy of one pod's record, as returned by the lookups.
type Workload struct {
	Namespace, Name, UID, ServiceAccount, Node string
	IPs                                        []netip.Addr
	Labels                                     Labels
	HostNetwork                                bool
	// Enrolled: the pod is in the mesh (its namespace is selected, it did
	// not opt out, it is not hostNetwork and not ambit itself, and it is
	// running with an address). A pod in graceful shutdown (deletion
	// timestamp set) stays enrolled: its app still runs.
	Enrolled bool
	// Terminating: the pod is being deleted or has finished
	// (Succeeded/Failed). A capture layer must not take such a pod out of
	// the mesh: it releases it when its network namespace goes.
	Terminating bool
	// Eligible: the pod would be enrolled if its namespace were selected
	// (not opted out, not hostNetwork, not ambit itself), whether or not it
	// runs yet. The CNI ADD decision uses it: at that moment the pod has no
	// address in the API yet.
	Eligible bool
}

func (t *Tables) snapshot(w *workload) Workload {
	return Workload{
		Namespace: w.ns.Value(), Name: w.name, UID: w.uid,
		ServiceAccount: w.sa.Value(), Node: w.node.Value(),
		IPs: append([]netip.Addr(nil), w.ips...), Labels: w.labels,
		HostNetwork: w.hostNetwork, Enrolled: t.isEnrolled(w), Eligible: w.eligible,
		Terminating: w.terminating,
	}
}

// isEnrolled computes enrolment from the pod and its namespace; called with
// t.mu held.
func (t *Tables) isEnrolled(w *workload) bool {
	if !w.eligible || !w.live {
		return false
	}
	n := t.namespaces[w.ns.Value()]
	return n != nil && n.enabled
}

func (t *Tables) newWorkload(p *CompactPod) (*workload, error) {
	if p.BadIP != "" {
		return nil, fmt.Errorf("pod IP %q: %w", p.BadIP, errBadIP)
	}
	w := &workload{
		ns: intern(p.Namespace), name: p.Name, uid: string(p.UID),
		sa: p.ServiceAccount, node: p.Node,
		labels:      p.Labels,
		hostNetwork: p.HostNetwork,
		local:       p.Node.Value() == t.opts.LocalNode,
	}
	if !w.hostNetwork {
		w.ips = p.IPs
	}
	finished := p.Phase == corev1.PodSucceeded || p.Phase == corev1.PodFailed
	w.live = len(w.ips) > 0 && !finished
	w.terminating = finished || p.Deleting
	if finished {
		w.ips = nil // the address may already belong to another pod
	}
	w.id = t.identityOf(p.Namespace, p.ServiceAccount.Value())
	w.eligible = !w.hostNetwork && !t.opts.PodOptOutSelector.Matches(w.labels) && !t.isSelf(p.Namespace, w.labels)
	return w, nil
}

func (t *Tables) isSelf(ns string, l Labels) bool {
	if t.opts.SelfSelector == nil || (t.opts.SelfNamespace != "" && ns != t.opts.SelfNamespace) {
		return false
	}
	return t.opts.SelfSelector.Matches(l)
}

var errBadIP = errors.New("not an IP address")

func (t *Tables) upsertPod(p *CompactPod) {
	k := objKey{p.Namespace, p.Name}
	w, err := t.newWorkload(p)
	if err != nil {
		t.bad("Pod", k, err)
		return
	}
	t.write(func(ev *[]Event) {
		old := t.pods[k]
		if old != nil {
			t.unindexPod(old)
		}
		t.pods[k] = w
		for _, a := range w.ips {
			t.byIP[a] = w
		}
		if w.local {
			names := t.local[k.ns]
			if names == nil {
				names = make(map[string]struct{})
				t.local[k.ns] = names
			}
			names[k.name] = struct{}{}
		}
		// A new UID under the same name is a new pod: release the old one
		// before enrolling its successor.
		if old != nil && old.enrolled && (old.uid != w.uid || !w.local) {
			old.enrolled = false
			*ev = append(*ev, Event{Type: Release, Workload: t.snapshot(old)})
		} else if old != nil {
			w.enrolled = old.enrolled
		}
		t.reconcile(w, ev)
	})
}

// unindexPod removes w from the indexes, leaving t.pods alone.
func (t *Tables) unindexPod(w *workload) {
	for _, a := range w.ips {
		if t.byIP[a] == w {
			delete(t.byIP, a)
		}
	}
	if w.local {
		ns := w.ns.Value()
		if names := t.local[ns]; names != nil {
			delete(names, w.name)
			if len(names) == 0 {
				delete(t.local, ns)
			}
		}
	}
}

func (t *Tables) deletePod(p *CompactPod) {
	k := objKey{p.Namespace, p.Name}
	t.write(func(ev *[]Event) {
		old := t.pods[k]
		if old == nil || (p.UID != "" && string(p.UID) != old.uid) {
			return // unknown, or a stale delete of a predecessor
		}
		t.unindexPod(old)
		delete(t.pods, k)
		if old.enrolled {
			old.enrolled = false
			*ev = append(*ev, Event{Type: Release, Workload: t.snapshot(old)})
		}
	})
}

// Lookup returns the pod that owns addr.
func (t *Tables) Lookup(addr netip.Addr) (Workload, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	w := t.byIP[addr.Unmap()]
	if w == nil {
		return Workload{}, false
	}
	return t.snapshot(w), true
}

// Pod returns the pod namespace/name.
func (t *Tables) Pod(namespace, name string) (Workload, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	w := t.pods[objKey{namespace, name}]
	if w == nil {
		return Workload{}, false
	}
	return t.snapshot(w), true
}

// LocalEnrolled returns this node's enrolled pods (for the capture layer
// to reconcile against at start, and for readiness).
func (t *Tables) LocalEnrolled() []Workload {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []Workload
	for ns, names := range t.local {
		for name := range names {
			if w := t.pods[objKey{ns, name}]; w != nil && w.enrolled {
				out = append(out, t.snapshot(w))
			}
		}
	}
	return out
}

type saKey struct{ ns, sa string }

// identityOf returns the SPIFFE ID of a service account, built once per
// service account and shared by its pods (one string instead of one per
// pod, and no allocation per connection). The cache only grows with the
// number of distinct service accounts ever seen.
func (t *Tables) identityOf(ns, sa string) spiffeid.ID {
	k := saKey{ns, sa}
	if id, ok := t.ids.Load(k); ok {
		return id.(spiffeid.ID)
	}
	id, err := identity.Workload(t.opts.TrustDomain, ns, sa)
	if err != nil {
		t.log.Warn("pod has no valid identity", "namespace", ns, "serviceAccount", sa, "err", err)
		return spiffeid.ID{}
	}
	t.ids.Store(k, id)
	return id
}

package policies

import (
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// PendingIstioDiscovery is listed in Status.Pending until the first Istio
// discovery succeeds (with Config.Istio).
const PendingIstioDiscovery = "discovery of " + IstioGroup

// Status is the watch's state, for readiness, metrics and config_dump.
type Status struct {
	// Synced: see Watcher.Synced.
	Synced bool
	// Pending names the informers (resource names, e.g.
	// "authorizationpolicies.security.ambit.dev/v1alpha1") whose initial
	// list has not arrived yet, and PendingIstioDiscovery while the Istio
	// switch waits for its first successful discovery.
	Pending []string
	// LastApply is when the Engine last received a policy set (zero if
	// never), LastApplyDuration what converting, Engine.Update and
	// Live.Recheck took then.
	LastApply         time.Time
	LastApplyDuration time.Duration
	// Resources: one per watched resource.
	Resources []ResourceStatus
	// Malformed lists the objects not enforced as written at the last
	// apply (each was replaced by a fail-closed stand-in: package doc, Bad
	// input).
	Malformed []MalformedObject
	// Stale: some watch failed after its last event and less than
	// Config.StaleAfter ago; the last known policies stay in force.
	Stale bool
	Istio IstioStatus
}

// ResourceStatus is the state of one watched resource.
type ResourceStatus struct {
	Name    string
	Synced  bool
	Objects int // at the last apply
	// LastEvent is when the informer last delivered an event.
	LastEvent time.Time
	// LastError, LastErrorAt, Errors: watch failures (client-go retries).
	LastError   string
	LastErrorAt time.Time
	Errors      uint64
	Stale       bool
}

// MalformedObject is one object that could not be taken as written.
type MalformedObject struct {
	Resource, Namespace, Name string
	Reason                    string // ReasonMalformed or ReasonUnknownFields
	Message                   string // the error and what is enforced instead
}

// IstioStatus is the state of the Istio switch.
type IstioStatus struct {
	Enabled bool
	// AuthorizationPolicies and PeerAuthentications are the
	// group/versions found and watched ("" while not found).
	AuthorizationPolicies string
	PeerAuthentications   string
	// LastCheck is when discovery last ran; LastError its last failure
	// other than "not served".
	LastCheck time.Time
	LastError string
}

// Stats are cumulative counters, for metrics.
type Stats struct {
	Events             uint64 // informer events
	Applies            uint64 // complete sets handed to the Engine
	ConversionFailures uint64 // object versions that were malformed or had unknown fields
	StatusWrites       uint64 // status patches that succeeded
	StatusConflicts    uint64 // status patches refused because the object changed (another node wrote first)
	StatusErrors       uint64 // other failed status patches (retried)
	ClosedConnections  uint64 // live connections closed by Live.Recheck after an apply
	WatchErrors        uint64 // watch/list failures reported by the informers
}

// Stats returns the cumulative counters.
func (w *Watcher) Stats() Stats {
	s := &w.stats
	return Stats{
		Events: s.events.Load(), Applies: s.applies.Load(), ConversionFailures: s.conversionFailures.Load(),
		StatusWrites: s.statusWrites.Load(), StatusConflicts: s.statusConflicts.Load(), StatusErrors: s.statusErrors.Load(),
		ClosedConnections: s.closed.Load(), WatchErrors: s.watchErrors.Load(),
	}
}

// Status reports the watch's state.
func (w *Watcher) Status() Status {
	now := w.cfg.Now()
	w.mu.Lock()
	s := Status{
		Synced: w.applied, LastApply: w.lastApply, LastApplyDuration: w.applyDur,
		Malformed: append([]MalformedObject(nil), w.malformed...), Istio: w.istio,
	}
	kinds := append([]*kindWatch(nil), w.kinds...)
	objects := w.objects
	if w.cfg.Istio && !w.istioChecked {
		s.Pending = append(s.Pending, PendingIstioDiscovery)
	}
	w.mu.Unlock()
	for _, k := range kinds {
		r := ResourceStatus{Name: k.name, Synced: k.synced(), Objects: objects[k.name]}
		if n := k.lastEvent.Load(); n != 0 {
			r.LastEvent = time.Unix(0, n)
		}
		k.mu.Lock()
		if k.lastErr != nil {
			r.LastError = k.lastErr.Error()
		}
		r.LastErrorAt, r.Errors = k.errAt, k.errCount
		k.mu.Unlock()
		r.Stale = r.LastError != "" && r.LastErrorAt.After(r.LastEvent) && now.Sub(r.LastErrorAt) < w.cfg.StaleAfter
		s.Stale = s.Stale || r.Stale
		if !r.Synced {
			s.Pending = append(s.Pending, k.name)
		}
		s.Resources = append(s.Resources, r)
	}
	return s
}

// convert converts one object, counting and logging a problem (once per
// object version: apply memoizes by UID and resourceVersion).
func (w *Watcher) convert(k *kindWatch, u *unstructured.Unstructured) result {
	var res result
	if k.kind == kindPA {
		res = convertPA(u, k.istio, w.cfg.RootNamespace)
	} else {
		res = convertAP(u, k.istio, w.cfg.RootNamespace)
	}
	if p := res.problem; p != nil {
		w.stats.conversionFailures.Add(1)
		w.log.Error("policy object not enforced as written", "resource", k.name,
			"namespace", u.GetNamespace(), "name", u.GetName(), "resourceVersion", u.GetResourceVersion(),
			"reason", p.Reason, "err", p.Err, "enforcedInstead", p.Enforced)
	}
	return res
}

package tables

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Tables holds the node agent's view of the cluster. Writers are the
// informer handlers (OnAdd, OnUpdate, OnDelete); readers are Resolve and
// the lookups. All methods are safe for concurrent use.
type Tables struct {
	opts Options
	log  *slog.Logger

	mu sync.RWMutex
	// pods by namespace/name; byIP indexes the pods that own an address
	// (hostNetwork pods and finished pods are not indexed: their addresses
	// belong to the node or may be reused).
	pods map[objKey]*workload
	byIP map[netip.Addr]*workload
	// local indexes this node's pods by namespace, for re-evaluating
	// enrolment when a namespace is relabelled.
	local      map[string]map[string]struct{}
	namespaces map[string]*namespace
	services   map[objKey]*service
	svcByIP    map[netip.Addr]*service
	// slices by their service, sorted by slice name (a stable order makes
	// round robin exact); sliceSvc remembers which service a slice was
	// filed under.
	slices   map[objKey][]*slice
	sliceSvc map[objKey]objKey

	// queue holds events not yet delivered (guarded by qmu, appended with
	// mu held so it is in change order); deliver serialises delivery.
	qmu     sync.Mutex
	queue   []Event
	deliver sync.Mutex

	// ids caches service account identities (see identityOf).
	ids sync.Map

	badObjects atomic.Uint64
	events     atomic.Uint64
	lastChange atomic.Int64 // unix nanoseconds
}

type objKey struct{ ns, name string }

func (k objKey) String() string { return k.ns + "/" + k.name }

// New returns empty tables.
func New(opts Options) (*Tables, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	return &Tables{
		opts:       opts,
		log:        opts.Logger.With("component", "tables"),
		pods:       make(map[objKey]*workload),
		byIP:       make(map[netip.Addr]*workload),
		local:      make(map[string]map[string]struct{}),
		namespaces: make(map[string]*namespace),
		services:   make(map[objKey]*service),
		svcByIP:    make(map[netip.Addr]*service),
		slices:     make(map[objKey][]*slice),
		sliceSvc:   make(map[objKey]objKey),
	}, nil
}

// write runs fn under the write lock and then delivers the events it
// produced, in order, without the lock held.
//
// Events are queued while mu is held, so the queue is in the order of the
// changes; whoever holds deliver drains it. Delivery never holds mu, so a
// callback may read the tables while another writer waits to deliver.
func (t *Tables) write(fn func(ev *[]Event)) {
	t.mu.Lock()
	var evs []Event
	fn(&evs)
	t.lastChange.Store(t.opts.Now().UnixNano())
	if len(evs) > 0 {
		t.events.Add(uint64(len(evs)))
		t.qmu.Lock()
		t.queue = append(t.queue, evs...)
		t.qmu.Unlock()
	}
	t.mu.Unlock()
	if len(evs) == 0 {
		return
	}
	t.deliver.Lock()
	defer t.deliver.Unlock()
	for {
		t.qmu.Lock()
		batch := t.queue
		t.queue = nil
		t.qmu.Unlock()
		if len(batch) == 0 {
			return
		}
		if t.opts.OnEnrolment != nil {
			for _, e := range batch {
				t.opts.OnEnrolment(e)
			}
		}
	}
}

// bad records an object that cannot be used: it is logged, counted and
// otherwise ignored (the previous state of that object stays).
func (t *Tables) bad(kind string, key objKey, err error) {
	t.badObjects.Add(1)
	t.log.Warn("ignoring invalid object", "kind", kind, "object", key.String(), "err", err)
}

// Stats is a point-in-time summary of the tables.
type Stats struct {
	Pods, PodIPs, LocalPods, LocalEnrolled int
	Namespaces, EnrolledNamespaces         int
	Services, ServiceIPs                   int
	EndpointSlices, Endpoints              int
	// BadObjects counts objects ignored as invalid since start.
	BadObjects uint64
	// Events counts Enrol/Release events emitted since start.
	Events uint64
	// LastChange is when a handler last changed the tables (zero if never).
	LastChange time.Time
}

// Stats returns the current sizes and counters.
func (t *Tables) Stats() Stats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s := Stats{
		Pods: len(t.pods), PodIPs: len(t.byIP),
		Namespaces: len(t.namespaces),
		Services:   len(t.services), ServiceIPs: len(t.svcByIP),
		BadObjects: t.badObjects.Load(), Events: t.events.Load(),
	}
	if n := t.lastChange.Load(); n != 0 {
		s.LastChange = time.Unix(0, n)
	}
	for ns, names := range t.local {
		s.LocalPods += len(names)
		for name := range names {
			if p := t.pods[objKey{ns, name}]; p != nil && p.enrolled {
				s.LocalEnrolled++
			}
		}
	}
	for _, n := range t.namespaces {
		if n.enabled {
			s.EnrolledNamespaces++
		}
	}
	for _, m := range t.slices {
		s.EndpointSlices += len(m)
		for _, sl := range m {
			s.Endpoints += len(sl.endpoints)
		}
	}
	return s
}

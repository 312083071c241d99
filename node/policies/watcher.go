package policies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// ErrAlreadyRun is returned by a second call of Run.
var ErrAlreadyRun = errors.New("policies: Run called twice")

// Watcher watches the policy resources and keeps the Engine (and Live)
// current. Create it with New, then call Run.
type Watcher struct {
	cfg     Config
	log     *slog.Logger
	factory dynamicinformer.DynamicSharedInformerFactory
	patch   patcher

	applyKick, statusKick *debouncer

	mu      sync.Mutex
	kinds   []*kindWatch
	memo    map[objKey]memoEntry
	desired map[objKey]desired
	applied bool
	// istioChecked: Istio discovery has succeeded once (informers for
	// what it found are registered).
	istioChecked bool
	lastApply    time.Time
	applyDur     time.Duration
	objects      map[string]int // per resource name, at the last apply
	malformed    []MalformedObject
	istio        IstioStatus

	stats   counters
	running atomic.Bool
	ctx     context.Context // Run's, for the status retry timer
	retry   *time.Timer     // the status retry timer, guarded by mu
}

type counters struct {
	events, applies, conversionFailures, statusWrites, statusConflicts,
	statusErrors, closed, watchErrors atomic.Uint64
}

// memoEntry is one object's conversion, reused while its UID and
// resourceVersion stay the same.
type memoEntry struct {
	uid types.UID
	rv  string
	res result
}

// kindWatch is one watched resource.
type kindWatch struct {
	name  string // e.g. "authorizationpolicies.security.ambit.dev/v1alpha1"
	kind  kind
	istio bool
	gvr   schema.GroupVersionResource
	store cache.Store
	reg   synceder // the handler registration; nil: synced (tests)

	lastEvent atomic.Int64
	mu        sync.Mutex
	lastErr   error
	errAt     time.Time
	errCount  uint64
}

// synceder is the part of cache.ResourceEventHandlerRegistration used.
type synceder interface{ HasSynced() bool }

func (k *kindWatch) list() []any  { return k.store.List() }
func (k *kindWatch) synced() bool { return k.reg == nil || k.reg.HasSynced() }

// The ambit resources.
var (
	ambitAP = schema.GroupVersionResource{Group: v1alpha1.GroupName, Version: "v1alpha1", Resource: v1alpha1.ResourceAuthorizationPolicies}
	ambitPA = schema.GroupVersionResource{Group: v1alpha1.GroupName, Version: "v1alpha1", Resource: v1alpha1.ResourcePeerAuthentications}
)

func resourceName(gvr schema.GroupVersionResource) string {
	return gvr.Resource + "." + gvr.Group + "/" + gvr.Version
}

// New creates the ambit informers (not started); Istio's are created by
// Run when discovery finds them.
func New(cfg Config) (*Watcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w := &Watcher{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "policies"),
		factory: dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, 0),
		patch:   dynPatcher{cfg.Dynamic},
		memo:    map[objKey]memoEntry{},
		desired: map[objKey]desired{},
		objects: map[string]int{},
		istio:   IstioStatus{Enabled: cfg.Istio},
	}
	w.applyKick = newDebouncer(func() time.Duration { return cfg.Debounce })
	w.statusKick = newDebouncer(func() time.Duration {
		if cfg.StatusJitter <= 0 {
			return 0
		}
		return rand.N(cfg.StatusJitter)
	})
	for _, r := range []struct {
		gvr  schema.GroupVersionResource
		kind kind
	}{{ambitAP, kindAP}, {ambitPA, kindPA}} {
		if _, err := w.addInformer(r.gvr, r.kind, false); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// addInformer creates the informer of one resource and registers it.
func (w *Watcher) addInformer(gvr schema.GroupVersionResource, kd kind, istio bool) (*kindWatch, error) {
	inf := w.factory.ForResource(gvr).Informer()
	k := &kindWatch{name: resourceName(gvr), kind: kd, istio: istio, gvr: gvr, store: inf.GetStore()}
	if err := inf.SetTransform(strip); err != nil {
		return nil, fmt.Errorf("policies: %s: %w", k.name, err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		w.recordWatchError(k, err)
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}); err != nil {
		return nil, fmt.Errorf("policies: %s: %w", k.name, err)
	}
	reg, err := inf.AddEventHandler(handler{w: w, k: k})
	if err != nil {
		return nil, fmt.Errorf("policies: %s: %w", k.name, err)
	}
	k.reg = reg
	w.mu.Lock()
	w.kinds = append(w.kinds, k)
	w.mu.Unlock()
	return k, nil
}

// strip is the informers' transform: the cache keeps neither managedFields
// nor annotations (kubectl's last-applied copy doubles an object's size).
func strip(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		u.SetManagedFields(nil)
		u.SetAnnotations(nil)
	}
	return obj, nil
}

// Run starts the informers and the apply (and status, and Istio discovery)
// loops, and blocks until ctx ends; then it waits for them to stop and
// returns nil. It may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	w.mu.Lock()
	w.ctx = ctx
	kinds := slices.Clone(w.kinds)
	w.mu.Unlock()

	var wg sync.WaitGroup
	w.factory.Start(ctx.Done())
	for _, k := range kinds {
		wg.Go(func() { w.waitSynced(ctx, k) })
	}
	wg.Go(func() { w.applyKick.run(ctx, w.apply) })
	if w.cfg.WriteStatus {
		wg.Go(func() { w.statusKick.run(ctx, func() { w.writeStatuses(ctx) }) })
	}
	if w.cfg.Istio {
		wg.Go(func() { w.istioLoop(ctx, &wg) })
	}
	w.applyKick.Kick() // nothing to watch at all is a complete (empty) set too
	<-ctx.Done()
	w.factory.Shutdown()
	wg.Wait()
	w.mu.Lock()
	if w.retry != nil {
		w.retry.Stop()
	}
	w.mu.Unlock()
	return nil
}

// waitSynced kicks an apply once k's initial list has been delivered: the
// applies kicked by the initial adds return early until then.
func (w *Watcher) waitSynced(ctx context.Context, k *kindWatch) {
	if cache.WaitForCacheSync(ctx.Done(), k.reg.HasSynced) {
		w.log.Debug("informer synced", "resource", k.name)
		w.applyKick.Kick()
	}
}

// Synced reports whether a complete policy set (every informer's initial
// list) has reached the Engine. Until then the Engine may hold no policies
// at all, which allows everything: the daemon must not serve inbound
// connections before Synced (readiness). It stays true afterwards, also
// when Istio's informers start later (Status.Pending lists them until they
// sync; their policies are applied from then on).
func (w *Watcher) Synced() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.applied
}

// WaitForSync blocks until Synced or ctx ends (then ErrNotSynced naming
// what is pending).
func (w *Watcher) WaitForSync(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !w.Synced() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: pending %v: %w", ErrNotSynced, w.Status().Pending, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// handler turns informer events into kicks.
type handler struct {
	w *Watcher
	k *kindWatch
}

func (h handler) touch() {
	h.k.lastEvent.Store(h.w.cfg.Now().UnixNano())
	h.w.stats.events.Add(1)
}

func (h handler) OnAdd(any, bool) { h.touch(); h.w.applyKick.Kick() }
func (h handler) OnDelete(any)    { h.touch(); h.w.applyKick.Kick() }
func (h handler) OnUpdate(old, obj any) {
	h.touch()
	if statusOnly(old, obj) {
		// Nothing the Engine reads changed (typically a node daemon wrote
		// the status): only compare the status again.
		if h.w.cfg.WriteStatus && !h.k.istio {
			h.w.statusKick.Kick()
		}
		return
	}
	h.w.applyKick.Kick()
}

// statusOnly reports whether an update left spec and identity alone. With
// the status subresource the API server bumps metadata.generation on every
// spec change and never on a status change; without a generation the
// specs are compared.
func statusOnly(old, obj any) bool {
	a, ok1 := old.(*unstructured.Unstructured)
	b, ok2 := obj.(*unstructured.Unstructured)
	if !ok1 || !ok2 || a.GetUID() != b.GetUID() || a.GetGeneration() != b.GetGeneration() ||
		a.GetNamespace() != b.GetNamespace() || a.GetName() != b.GetName() {
		return false
	}
	if a.GetGeneration() != 0 {
		return true
	}
	return reflect.DeepEqual(a.Object["spec"], b.Object["spec"])
}

func (w *Watcher) recordWatchError(k *kindWatch, err error) {
	k.mu.Lock()
	k.lastErr, k.errAt = err, w.cfg.Now()
	k.errCount++
	k.mu.Unlock()
	w.stats.watchErrors.Add(1)
	w.log.Warn("policy watch failed; enforcing the last known policies", "resource", k.name, "err", err)
}

// ownKinds are the ambit resources (whose status ambit writes). Call with
// w.mu held.
func (w *Watcher) ownKinds() []*kindWatch {
	var out []*kindWatch
	for _, k := range w.kinds {
		if !k.istio {
			out = append(out, k)
		}
	}
	return out
}

// statusRetry schedules another status pass after a failed write (one
// timer, re-armed; stopped when Run returns).
func (w *Watcher) statusRetry() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil || w.ctx.Err() != nil {
		return
	}
	if w.retry == nil {
		w.retry = time.AfterFunc(DefaultStatusRetry, w.statusKick.Kick)
		return
	}
	w.retry.Reset(DefaultStatusRetry)
}

// dynPatcher patches the status subresource through the dynamic client.
type dynPatcher struct{ c dynamic.Interface }

func (p dynPatcher) PatchStatus(ctx context.Context, k *kindWatch, namespace, name string, patch []byte) error {
	_, err := p.c.Resource(k.gvr).Namespace(namespace).Patch(ctx, name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: FieldManager}, "status")
	return err
}

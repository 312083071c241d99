package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ErrBadConfig is wrapped by New for an invalid Config.
var ErrBadConfig = errors.New("watch: invalid config")

// ErrNotSynced is wrapped by WaitForSync when ctx ends before every
// informer has synced.
var ErrNotSynced = errors.New("watch: informers not synced")

// Informer names, as reported by Pending and Status.
const (
	Pods           = "pods"
	Namespaces     = "namespaces"
	Services       = "services"
	EndpointSlices = "endpointslices"
)

// DefaultStaleAfter is how long a watch error keeps Status.Stale set when
// no event has arrived since.
const DefaultStaleAfter = 2 * time.Minute

// Config configures New.
type Config struct {
	// Client talks to the API server (required).
	Client kubernetes.Interface
	// Handler receives every event of the four informers (required);
	// normally a *tables.Tables.
	Handler cache.ResourceEventHandler
	// Resync is the informers' resync period (optional, default 0: none;
	// the tables need no periodic resync).
	Resync time.Duration
	// StaleAfter: see Status.Stale (optional, default DefaultStaleAfter).
	StaleAfter time.Duration
	// Logger (optional, default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (optional, default time.Now).
	Now func() time.Time
	// Probe checks that the API server answers (optional, default
	// ReadyzProbe(Client); nil there for fake clients: no probe).
	Probe func(context.Context) error
	// ProbeInterval and ProbeTimeout pace Probe (optional, defaults
	// DefaultProbeInterval, DefaultProbeTimeout).
	ProbeInterval, ProbeTimeout time.Duration
}

// Watcher runs the Pod, Namespace, Service and EndpointSlice informers
// and feeds Config.Handler.
type Watcher struct {
	cfg       Config
	log       *slog.Logger
	factory   informers.SharedInformerFactory
	informers []*informer
	startOnce sync.Once

	pmu   sync.Mutex
	probe probeState
}

type informer struct {
	name string
	inf  cache.SharedIndexInformer
	reg  cache.ResourceEventHandlerRegistration
	// lastEvent is when this informer last delivered an event (unix ns).
	lastEvent atomic.Int64
	mu        sync.Mutex
	lastErr   error
	errAt     time.Time
	errCount  uint64
}

// New creates the informers (not started). Pods are watched cluster-wide:
// routing needs the identity of every endpoint pod, not only local ones.
func New(cfg Config) (*Watcher, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: Client is required", ErrBadConfig)
	}
	if cfg.Handler == nil {
		return nil, fmt.Errorf("%w: Handler is required", ErrBadConfig)
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Probe == nil {
		cfg.Probe = ReadyzProbe(cfg.Client)
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	w := &Watcher{cfg: cfg, log: cfg.Logger.With("component", "watch")}
	w.factory = informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync, informers.WithTransform(Transform))
	for _, i := range []struct {
		name string
		inf  cache.SharedIndexInformer
	}{
		{Namespaces, w.factory.Core().V1().Namespaces().Informer()},
		{Pods, w.factory.Core().V1().Pods().Informer()},
		{Services, w.factory.Core().V1().Services().Informer()},
		{EndpointSlices, w.factory.Discovery().V1().EndpointSlices().Informer()},
	} {
		in := &informer{name: i.name, inf: i.inf}
		if err := i.inf.SetWatchErrorHandlerWithContext(w.watchError(in)); err != nil {
			return nil, fmt.Errorf("watch: %s: %w", i.name, err)
		}
		reg, err := i.inf.AddEventHandler(handler{in: in, now: cfg.Now, next: cfg.Handler})
		if err != nil {
			return nil, fmt.Errorf("watch: %s: %w", i.name, err)
		}
		in.reg = reg
		w.informers = append(w.informers, in)
	}
	return w, nil
}

// Run starts the informers and blocks until ctx ends, then waits for them
// to stop. It may be called once.
func (w *Watcher) Run(ctx context.Context) {
	started := false
	w.startOnce.Do(func() { started = true })
	if !started {
		return
	}
	w.factory.StartWithContext(ctx)
	var wg sync.WaitGroup
	if w.cfg.Probe != nil {
		wg.Add(1)
		go func() { defer wg.Done(); w.probeLoop(ctx) }()
	}
	<-ctx.Done()
	wg.Wait()
	w.factory.Shutdown()
}

// WaitForSync blocks until every informer has delivered its initial list
// to the handler, or ctx ends (then it returns ErrNotSynced naming what is
// pending).
func (w *Watcher) WaitForSync(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		p := w.Pending()
		if len(p) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: pending %v: %w", ErrNotSynced, p, ctx.Err())
		case <-t.C:
		}
	}
}

// Pending lists the informers whose initial list has not yet been
// delivered to the handler (nil when all have synced). Readiness is
// len(Pending()) == 0.
func (w *Watcher) Pending() []string {
	var p []string
	for _, i := range w.informers {
		if !i.reg.HasSynced() {
			p = append(p, i.name)
		}
	}
	return p
}

// handler records the time of each event before passing it on.
type handler struct {
	in   *informer
	now  func() time.Time
	next cache.ResourceEventHandler
}

func (h handler) touch() { h.in.lastEvent.Store(h.now().UnixNano()) }

func (h handler) OnAdd(obj any, initial bool) { h.touch(); h.next.OnAdd(obj, initial) }
func (h handler) OnUpdate(old, obj any)       { h.touch(); h.next.OnUpdate(old, obj) }
func (h handler) OnDelete(obj any)            { h.touch(); h.next.OnDelete(obj) }

func (w *Watcher) watchError(in *informer) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, r *cache.Reflector, err error) {
		w.recordError(in, err)
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}
}

func (w *Watcher) recordError(in *informer, err error) {
	in.mu.Lock()
	in.lastErr, in.errAt = err, w.cfg.Now()
	in.errCount++
	in.mu.Unlock()
	w.log.Warn("watch failed; serving the last known state", "informer", in.name, "err", err)
}

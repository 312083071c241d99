package watch

import "time"

// InformerStatus is the state of one informer.
type InformerStatus struct {
	Name   string
	Synced bool
	// LastError is the last watch error and when it happened (nil, zero
	// if none); Errors counts them since start.
	LastError   error
	LastErrorAt time.Time
	Errors      uint64
	// LastEvent is when this informer last delivered an event (a relist
	// after a failure delivers one per object).
	LastEvent time.Time
	// Stale: the API server does not answer (Status.APIServerError), or
	// this informer's watch failed after its last event and less than
	// Config.StaleAfter ago.
	Stale bool
}

// Status is the state of the watch as a whole.
type Status struct {
	// Synced: every informer has delivered its initial list.
	Synced bool
	// Pending names the informers not yet synced.
	Pending []string
	// LastEvent is when the handler last received an event from any
	// informer (zero if never).
	LastEvent time.Time
	// Stale: some informer is stale (see InformerStatus.Stale): set while
	// the API server probe fails (the reflectors retry a refused
	// connection without reporting it), and after a watch error until the
	// next event or StaleAfter. The tables keep serving the last known
	// state meanwhile.
	Stale     bool
	Informers []InformerStatus
	// APIServerError is the last probe's failure (nil while the API server
	// answers, or without a probe); APIServerDownSince when the current
	// run of failures began.
	APIServerError     error
	APIServerDownSince time.Time
}

// Status reports sync state and staleness, for readiness and metrics.
func (w *Watcher) Status() Status {
	now := w.cfg.Now()
	s := Status{Pending: w.Pending()}
	w.pmu.Lock()
	s.APIServerError, s.APIServerDownSince = w.probe.err, w.probe.since
	w.pmu.Unlock()
	s.Synced = len(s.Pending) == 0
	for _, i := range w.informers {
		i.mu.Lock()
		is := InformerStatus{Name: i.name, Synced: i.reg.HasSynced(), LastError: i.lastErr, LastErrorAt: i.errAt, Errors: i.errCount}
		i.mu.Unlock()
		if n := i.lastEvent.Load(); n != 0 {
			is.LastEvent = time.Unix(0, n)
		}
		if is.LastEvent.After(s.LastEvent) {
			s.LastEvent = is.LastEvent
		}
		is.Stale = s.APIServerError != nil ||
			(is.LastError != nil && is.LastErrorAt.After(is.LastEvent) && now.Sub(is.LastErrorAt) < w.cfg.StaleAfter)
		s.Stale = s.Stale || is.Stale
		s.Informers = append(s.Informers, is)
	}
	return s
}

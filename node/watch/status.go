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
	// Stale: this informer's watch failed after its last event and less
	// than Config.StaleAfter ago.
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
	// Stale: some informer is stale (see InformerStatus.Stale). While the API server is unreachable the
	// reflectors retry with a backoff of at most about a minute and fail
	// each time, so Stale stays set; the tables keep serving the last
	// known state meanwhile. It clears on the next event, or StaleAfter
	// after the last error.
	Stale     bool
	Informers []InformerStatus
}

// Status reports sync state and staleness, for readiness and metrics.
func (w *Watcher) Status() Status {
	now := w.cfg.Now()
	s := Status{Pending: w.Pending()}
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
		is.Stale = is.LastError != nil && is.LastErrorAt.After(is.LastEvent) && now.Sub(is.LastErrorAt) < w.cfg.StaleAfter
		s.Stale = s.Stale || is.Stale
		s.Informers = append(s.Informers, is)
	}
	return s
}

package admin

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
)

// ReadyPath is where readiness is served.
const ReadyPath = "/healthz/ready"

// Readiness aggregates named checks. It is ready when at least one check
// is registered and every check returns nil. Safe for concurrent use.
type Readiness struct {
	mu     sync.RWMutex
	checks map[string]func() error
}

// NewReadiness returns a Readiness with no checks (not ready).
func NewReadiness() *Readiness { return &Readiness{checks: map[string]func() error{}} }

// Register adds or replaces the check called name. A check must be cheap
// and must not block: it runs on every probe.
func (r *Readiness) Register(name string, check func() error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks[name] = check
}

// Pending runs every check and returns "name: error" for each that fails,
// sorted by name. With no checks registered it reports that.
func (r *Readiness) Pending() []string {
	r.mu.RLock()
	names := make([]string, 0, len(r.checks))
	for n := range r.checks {
		names = append(names, n)
	}
	checks := make([]func() error, 0, len(names))
	sort.Strings(names)
	for _, n := range names {
		checks = append(checks, r.checks[n])
	}
	r.mu.RUnlock()
	if len(checks) == 0 {
		return []string{"no readiness checks registered"}
	}
	var out []string
	for i, c := range checks {
		if err := c(); err != nil {
			out = append(out, names[i]+": "+err.Error())
		}
	}
	return out
}

// ServeHTTP answers 200 "ready" or 500 with one pending item per line.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if p := r.Pending(); len(p) > 0 {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, "not ready:\n%s\n", strings.Join(p, "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// Handler returns a mux serving r at ReadyPath (the :15021 server).
func (r *Readiness) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+ReadyPath, r)
	return mux
}

// InformersSynced adapts an informer sync state function to a check that
// names the informers not yet synced.
func InformersSynced(state func() map[string]bool) func() error {
	return func() error {
		var pending []string
		for name, ok := range state() {
			if !ok {
				pending = append(pending, name)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		sort.Strings(pending)
		return fmt.Errorf("informers not synced: %s", strings.Join(pending, ", "))
	}
}

package agent

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ambit-mesh/ambit/node/admin"
	"github.com/ambit-mesh/ambit/node/watch"
)

// readyHandler serves readiness like admin.Readiness, adding to a 200 the
// notes that do not make the daemon unready. A daemon that cannot reach
// the API server stays Ready: its data path serves the last known state
// (and NotReady would change nothing for traffic, which is not routed by
// the daemon pod's readiness, while it would stall a rolling upgrade
// waiting for the surge pod); its body and ambit_informer_stale say it.
func readyHandler(r *admin.Readiness, notes func() []string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+admin.ReadyPath, func(w http.ResponseWriter, req *http.Request) {
		if len(r.Pending()) > 0 {
			r.ServeHTTP(w, req)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		b := "ready\n"
		for _, n := range notes() {
			b += n + "\n"
		}
		_, _ = w.Write([]byte(b))
	})
	return mux
}

// staleNotes describes a stale watch for the readiness body.
func staleNotes(st watch.Status, now time.Time) []string {
	if !st.Stale {
		return nil
	}
	if st.APIServerError != nil {
		return []string{fmt.Sprintf("stale: API server unreachable for %s (%v); serving the last known state",
			now.Sub(st.APIServerDownSince).Round(time.Second), st.APIServerError)}
	}
	var names []string
	for _, i := range st.Informers {
		if i.Stale {
			names = append(names, i.Name)
		}
	}
	return []string{"stale: watch failing for " + strings.Join(names, ", ") + "; serving the last known state"}
}

// untilPassed gates readiness on check until it has passed once, then
// passes for good. Capture is a start-up condition (every pod recovered or
// enrolled before the daemon says Ready), not a running one: a pod whose
// enrolment fails later is logged, counted and listed in /config_dump,
// while a daemon turning NotReady for it helps nobody (nothing routes by
// it) and, during a surge rollout, lets the DaemonSet controller delete
// the old pod before its successor runs. The old daemon, once taken over,
// also sees every new pod as not captured by itself.
func untilPassed(check func() error) func() error {
	var passed atomic.Bool
	return func() error {
		if passed.Load() {
			return nil
		}
		if err := check(); err != nil {
			return err
		}
		passed.Store(true)
		return nil
	}
}

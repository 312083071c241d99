package agent

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/node/admin"
	"github.com/ambit-mesh/ambit/node/watch"
)

// With the API server unreachable the daemon stays Ready (it serves the
// last known state) and says it is stale; a failing check still fails.
func TestReadyReportsStale(t *testing.T) {
	down := time.Now().Add(-30 * time.Second)
	st := watch.Status{Stale: true, APIServerError: errors.New("connection refused"), APIServerDownSince: down,
		Informers: []watch.InformerStatus{{Name: "pods", Stale: true}}}
	r := admin.NewReadiness()
	var failing error
	r.Register("informers", func() error { return failing })
	h := readyHandler(r, func() []string { return staleNotes(st, time.Now()) })
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, admin.ReadyPath, nil))
		b, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(b)
	}
	code, body := get()
	if code != http.StatusOK || !strings.HasPrefix(body, "ready\n") || !strings.Contains(body, "stale: API server unreachable for 30s") {
		t.Errorf("stale: %d %q", code, body)
	}
	st = watch.Status{Stale: true, Informers: []watch.InformerStatus{{Name: "pods", Stale: true}, {Name: "services"}}}
	if _, body := get(); !strings.Contains(body, "stale: watch failing for pods;") {
		t.Errorf("watch error: %q", body)
	}
	st = watch.Status{}
	if code, body := get(); code != http.StatusOK || body != "ready\n" {
		t.Errorf("fresh: %d %q", code, body)
	}
	failing = errors.New("not synced: pods")
	if code, body := get(); code != http.StatusInternalServerError || !strings.Contains(body, "not synced") {
		t.Errorf("pending: %d %q", code, body)
	}
}

func TestUntilPassed(t *testing.T) {
	var fail error = errors.New("pods not yet captured: shop/web")
	calls := 0
	check := untilPassed(func() error { calls++; return fail })
	if err := check(); err == nil {
		t.Fatal("passed before the check did")
	}
	fail = nil
	if err := check(); err != nil {
		t.Fatalf("check passed, gate did not: %v", err)
	}
	fail = errors.New("pods not yet captured: shop/late")
	if err := check(); err != nil {
		t.Errorf("after passing once the gate failed again: %v", err)
	}
	if calls != 2 {
		t.Errorf("check called %d times, want 2 (not after it passed)", calls)
	}
}

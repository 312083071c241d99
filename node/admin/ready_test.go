package admin

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestReadiness(t *testing.T) {
	r := NewReadiness()
	url := serve(t, r.Handler()) + ReadyPath

	code, body := do(t, "GET", url)
	if code != 500 || !strings.Contains(body, "no readiness checks registered") {
		t.Fatalf("no checks: %d %q, want 500 naming the cause", code, body)
	}

	// State the checks read, changed by the test between probes.
	var mu sync.Mutex
	synced := map[string]bool{"pods": true, "services": false, "endpointslices": false}
	captureErr := errors.New("2 of 5 enrolled pods not attached: shop/a, shop/b")
	set := func(s map[string]bool, c error) { mu.Lock(); synced, captureErr = s, c; mu.Unlock() }
	r.Register("informers", InformersSynced(func() map[string]bool { mu.Lock(); defer mu.Unlock(); return synced }))
	r.Register("capture", func() error { mu.Lock(); defer mu.Unlock(); return captureErr })
	r.Register("listeners", func() error { return nil })

	code, body = do(t, "GET", url)
	if code != 500 {
		t.Fatalf("pending: status %d, want 500", code)
	}
	mustContain(t, body, "capture: 2 of 5 enrolled pods not attached: shop/a, shop/b",
		"informers: informers not synced: endpointslices, services")
	if strings.Contains(body, "listeners") {
		t.Errorf("a passing check is listed as pending:\n%s", body)
	}

	set(map[string]bool{"pods": true, "services": true, "endpointslices": true}, errors.New("1 pod still attaching"))
	code, body = do(t, "GET", url)
	if code != 500 || !strings.Contains(body, "capture: 1 pod still attaching") || strings.Contains(body, "informers") {
		t.Fatalf("capture pending only: %d %q", code, body)
	}
	set(map[string]bool{"pods": true, "services": true, "endpointslices": true}, nil)
	code, body = do(t, "GET", url)
	if code != 200 || body != "ready\n" {
		t.Fatalf("all pass: %d %q, want 200 ready", code, body)
	}
	// A check registered later (a new listener failing) makes it unready again.
	r.Register("listeners", func() error { return errors.New("shop/a: 15008 not listening") })
	if code, body = do(t, "GET", url); code != 500 || !strings.Contains(body, "listeners: shop/a: 15008 not listening") {
		t.Fatalf("replaced check: %d %q", code, body)
	}
}

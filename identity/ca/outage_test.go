package ca_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca/catest"
	"github.com/ambit-mesh/ambit/identity/identitytest"
)

// TestCAOutageEndToEnd: a Manager fed by the real HTTPS CA keeps serving its
// valid certificate while the CA is down for longer than a renewal period,
// refuses only identities that have none, and renews once the CA is back.
func TestCAOutageEndToEnd(t *testing.T) {
	env, err := catest.Start(catest.Options{Dir: t.TempDir(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	env.Pods.Add("node-a", "shop", "web")
	env.Pods.Add("node-a", "shop", "late")
	client, _ := env.Client()
	defer client.Close()
	clock := identitytest.NewFakeClock(time.Now())
	m, err := identity.NewManager(identity.ManagerConfig{Provider: identity.CSRProvider{Signer: client}, Bundle: env.Bundle,
		Clock: clock, Logger: slog.New(slog.DiscardHandler), Rand: func() float64 { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := ctxT(t)
	id := wl("shop", "web")
	if err := m.Prefetch(ctx, id); err != nil {
		t.Fatal(err)
	}
	first, _ := m.GetX509SVIDFor(ctx, id)
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	renewIn := clock.Pending()[0]
	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
	client.Close() // drop kept-alive connections: the CA is really gone
	clock.Advance(renewIn)
	var down time.Duration
	for down <= renewIn { // longer than a whole renewal period, still before expiry
		if err := clock.WaitTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if s, err := m.GetX509SVIDFor(ctx, id); err != nil || s != first {
			t.Fatalf("after %s of outage: %v", down, err)
		}
		d := clock.Pending()[0]
		clock.Advance(d)
		down += d
	}
	// Let the attempt started by the last Advance fail before going on.
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// An identity with no certificate fails, with the reason.
	_, err = m.GetX509SVIDFor(ctx, wl("shop", "late"))
	if !errors.Is(err, identity.ErrNoCertificate) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("new identity during outage: %v", err)
	}
	if err := env.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := clock.WaitTimers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for _, d := range clock.Pending() {
		if d > 150*time.Second {
			t.Fatalf("retry scheduled %s away, beyond the 150s cap", d)
		}
	}
	clock.Advance(150 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := m.GetX509SVIDFor(ctx, id)
		if err == nil && s != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewal after the CA came back: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := m.Prefetch(ctx, wl("shop", "late")); err != nil {
		t.Fatalf("identity without certificate after recovery: %v", err)
	}
}

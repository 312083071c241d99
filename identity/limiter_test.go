package identity

import (
	"context"
	"testing"
	"time"
)

func TestLimiterRealTimeAheadOfRenewals(t *testing.T) {
	l := newCSRLimiter(1)
	ctx := context.Background()
	if err := l.acquire(ctx, false); err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 3)
	start := func(name string, high bool) {
		go func() {
			if err := l.acquire(ctx, high); err != nil {
				order <- "err"
				return
			}
			order <- name
			l.release()
		}()
	}
	waitQueued := func(h, lo int) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			gh, gl := l.queued()
			if gh == h && gl == lo {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("queued %d/%d, want %d/%d", gh, gl, h, lo)
			}
			time.Sleep(time.Millisecond)
		}
	}
	start("renew1", false)
	waitQueued(0, 1)
	start("renew2", false)
	waitQueued(0, 2)
	start("realtime", true)
	waitQueued(1, 2)
	l.release()
	want := []string{"realtime", "renew1", "renew2"}
	for i, w := range want {
		if got := <-order; got != w {
			t.Fatalf("grant %d: %s, want %s", i, got, w)
		}
	}
	// A cancelled waiter leaves the queue and takes no slot.
	if err := l.acquire(ctx, true); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := l.acquire(cctx, true); err == nil {
		t.Fatal("acquire beyond the limit succeeded")
	}
	l.release()
	if l.free != 1 {
		t.Fatalf("free = %d after all released, want 1", l.free)
	}
}

func TestBackoffSchedule(t *testing.T) {
	m := &Manager{cfg: ManagerConfig{InitialBackoff: 500 * time.Millisecond, MaxBackoff: 150 * time.Second, Rand: func() float64 { return 0.999 }}}
	for n, want := range map[int]time.Duration{1: 500 * time.Millisecond, 2: time.Second, 9: 128 * time.Second, 10: 150 * time.Second, 50: 150 * time.Second} {
		got := m.backoff(n)
		if got > want || got < want*8/10 {
			t.Errorf("backoff(%d) = %s, want within [0.8, 1] x %s", n, got, want)
		}
	}
}

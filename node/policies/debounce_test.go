package policies

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// fakeTimer lets the test decide when the debounce window ends.
type fakeTimer struct {
	waits chan time.Duration
	fire  chan time.Time
}

func newFakeTimer() *fakeTimer {
	return &fakeTimer{waits: make(chan time.Duration, 16), fire: make(chan time.Time)}
}

func (f *fakeTimer) after(d time.Duration) <-chan time.Time {
	f.waits <- d
	return f.fire
}

func TestDebounceCoalescesBurst(t *testing.T) {
	ft := newFakeTimer()
	d := newDebouncer(func() time.Duration { return 100 * time.Millisecond })
	d.after = ft.after
	runs := make(chan int, 16)
	var n atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.run(ctx, func() { runs <- int(n.Add(1)) }); close(done) }()
	defer func() {
		cancel()
		<-done
	}()

	d.Kick()
	if w := <-ft.waits; w != 100*time.Millisecond {
		t.Fatalf("waited %v", w)
	}
	for range 50 { // a burst inside the window
		d.Kick()
	}
	select {
	case r := <-runs:
		t.Fatalf("ran (%d) before the window ended", r)
	default:
	}
	ft.fire <- time.Time{}
	if r := <-runs; r != 1 {
		t.Fatalf("run %d", r)
	}
	// The burst was covered by that run: nothing more without a kick.
	select {
	case w := <-ft.waits:
		t.Fatalf("another window (%v) opened without a kick", w)
	case <-time.After(50 * time.Millisecond):
	}
	// A kick after the run opens a new window and runs once more.
	d.Kick()
	<-ft.waits
	ft.fire <- time.Time{}
	if r := <-runs; r != 2 {
		t.Fatalf("run %d", r)
	}
}

func TestDebounceKickDuringRunRunsAgain(t *testing.T) {
	d := newDebouncer(func() time.Duration { return 0 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	runs := make(chan struct{}, 4)
	first := true
	go d.run(ctx, func() {
		runs <- struct{}{}
		if first {
			first = false
			<-release
		}
	})
	d.Kick()
	<-runs
	d.Kick() // during the run
	close(release)
	select {
	case <-runs:
	case <-time.After(10 * time.Second):
		t.Fatal("a kick during a run was lost")
	}
}

func TestDebounceStopsOnCancel(t *testing.T) {
	ft := newFakeTimer()
	d := newDebouncer(func() time.Duration { return time.Hour })
	d.after = ft.after
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ran := false
	go func() { d.run(ctx, func() { ran = true }); close(done) }()
	d.Kick()
	<-ft.waits
	cancel()
	<-done
	if ran {
		t.Fatal("ran after cancel inside the window")
	}
}

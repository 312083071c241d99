package policies

import (
	"context"
	"time"
)

// debouncer coalesces kicks: after a kick it waits delay(), then runs fn
// once for every kick received until then. A kick during fn runs fn again
// after another delay. The wait is counted from the first kick of a burst
// and not restarted by later ones, so a steady stream of events cannot
// postpone an apply indefinitely.
type debouncer struct {
	kick  chan struct{}
	delay func() time.Duration
	// after is time.After, replaceable in tests.
	after func(time.Duration) <-chan time.Time
}

func newDebouncer(delay func() time.Duration) *debouncer {
	return &debouncer{kick: make(chan struct{}, 1), delay: delay, after: time.After}
}

// Kick asks for a run; it never blocks.
func (d *debouncer) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// run calls fn as described on debouncer until ctx ends.
func (d *debouncer) run(ctx context.Context, fn func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		}
		if wait := d.delay(); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-d.after(wait):
			}
		}
		// Kicks received during the wait are covered by this run: fn
		// reads the stores after them.
		select {
		case <-d.kick:
		default:
		}
		fn()
	}
}

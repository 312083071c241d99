package ca

import (
	"sync"
	"time"

	"github.com/ambit-mesh/ambit/identity"
)

// logThrottle lets through at most burst denial lines per reason per
// second, so that a flood of bad requests is counted in full but logged in
// a few lines; the first line of the next second says how many were
// suppressed.
type logThrottle struct {
	burst int
	clock identity.Clock

	mu  sync.Mutex
	per map[Reason]*throttleWindow
}

type throttleWindow struct {
	start      time.Time
	n          int
	suppressed uint64
}

func newLogThrottle(burst int, clock identity.Clock) *logThrottle {
	return &logThrottle{burst: burst, clock: clock, per: map[Reason]*throttleWindow{}}
}

// allow reports whether a line for r may be logged now and, if so, how many
// were suppressed since the last one.
func (l *logThrottle) allow(r Reason) (bool, uint64) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.per[r]
	if w == nil {
		w = &throttleWindow{start: now}
		l.per[r] = w
	}
	if now.Sub(w.start) >= time.Second {
		w.start, w.n = now, 0
	}
	if w.n >= l.burst {
		w.suppressed++
		return false, 0
	}
	w.n++
	s := w.suppressed
	w.suppressed = 0
	return true, s
}

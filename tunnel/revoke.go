// Revoking allowed streams: the server's side of Decision.Watch.

package tunnel

import (
	"context"
	"sync/atomic"
)

// revocable is one allowed stream handed to its Decision's Watch. The
// stream runs under ctx, which revoke cancels: the dial is abandoned, or
// Splice resets both sides, as when the serve context ends.
type revocable struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	by     atomic.Pointer[Decision] // the first revoking decision
	done   func()
}

// watch gives an allowed stream to dec.Watch. It returns nil, and the
// stream runs under ctx, when the decision has no Watch.
func watch(ctx context.Context, dec Decision) *revocable {
	if dec.Watch == nil {
		return nil
	}
	r := &revocable{}
	r.ctx, r.cancel = context.WithCancelCause(ctx)
	// cancel is set first: Watch may revoke before it returns.
	r.done = dec.Watch(r.revoke)
	return r
}

// revoke is the function Watch receives: it never blocks (cancelling runs
// Splice's abort on its own goroutine) and only the first call counts.
func (r *revocable) revoke(d Decision) {
	d.Allow, d.Watch = false, nil
	if r.by.CompareAndSwap(nil, &d) {
		r.cancel(ErrRevoked)
	}
}

// context is the context the stream runs under.
func (r *revocable) context(parent context.Context) context.Context {
	if r == nil {
		return parent
	}
	return r.ctx
}

// revokedBy is the revoking decision, nil if the stream was not revoked.
func (r *revocable) revokedBy() *Decision {
	if r == nil {
		return nil
	}
	if d := r.by.Load(); d != streamEnded {
		return d
	}
	return nil
}

// streamEnded takes the place of a revoking decision once the stream has
// ended, so a late revoke does nothing.
var streamEnded = &Decision{}

// end tells the watcher the stream has ended; later revokes do nothing.
func (r *revocable) end() {
	if r == nil {
		return
	}
	r.by.CompareAndSwap(nil, streamEnded)
	r.cancel(nil)
	if r.done != nil {
		r.done()
	}
}

// revokedReason is the ConnInfo.Reason of a revoked stream.
func revokedReason(d *Decision) string {
	if d.Reason == "" {
		return "policy changed"
	}
	return "policy changed: " + d.Reason
}

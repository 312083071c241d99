package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// lingerContext returns a context that outlives parent by d: when parent
// ends (SIGTERM, as when Kubernetes deletes the pod) it writes
// "term at=<unix ms>" to w and keeps the client running for d more, the way
// an application's graceful shutdown keeps using the network. The returned
// cancel releases it at once.
func lingerContext(parent context.Context, d time.Duration, w io.Writer) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() {
		fmt.Fprintf(w, "term at=%d linger=%s\n", time.Now().UnixMilli(), d)
		t := time.AfterFunc(d, cancel)
		context.AfterFunc(ctx, func() { t.Stop() })
	})
	return ctx, func() { stop(); cancel() }
}

// Command ambitctl shows one node's ambit daemon state (workloads,
// certificates, policies, live connections) from its admin endpoint,
// directly or through the API server's port-forward. Run ambitctl -h.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambit-mesh/ambit/cmd/ambitctl/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

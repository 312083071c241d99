// Command ambit-demo narrates ambit for a newcomer (see package demo).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambit-mesh/ambit/e2e/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, cleanup, err := demo.TempDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ambit-demo:", err)
		os.Exit(1)
	}
	_, err = demo.Local(ctx, os.Stdout, dir)
	cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ambit-demo:", err)
		os.Exit(1)
	}
}

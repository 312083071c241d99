// Command ambit-demo narrates ambit for a newcomer (see package demo).
//
//	ambit-demo [-keep] [-v]   the cluster demo: a real two-node Kubernetes
//	                          cluster on this machine, helm install, a
//	                          namespace label, wire capture, metrics, policy
//	                          (root; `sudo make demo`)
//	ambit-demo -local         the local demo: a CA, certificates, a policy,
//	                          two HBONE endpoints in this process
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambit-mesh/ambit/e2e/demo"
)

func main() {
	local := flag.Bool("local", false, "run the local demo (no cluster, no root)")
	keep := flag.Bool("keep", os.Getenv("KEEP") == "1", "leave the cluster running (default: $KEEP is 1)")
	verbose := flag.Bool("v", false, "log the cluster harness's progress to stderr")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if *local {
		err = runLocal(ctx)
	} else {
		opts := demo.ClusterOptions{Keep: *keep}
		if *verbose {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
		err = demo.Cluster(ctx, os.Stdout, opts)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ambit-demo:", err)
		os.Exit(1)
	}
}

func runLocal(ctx context.Context) error {
	dir, cleanup, err := demo.TempDir()
	if err != nil {
		return err
	}
	defer cleanup()
	_, err = demo.Local(ctx, os.Stdout, dir)
	return err
}

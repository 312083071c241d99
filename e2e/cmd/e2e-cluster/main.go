// Command e2e-cluster runs ambit's end-to-end cluster outside a test, for a
// demo or for poking at it with kubectl and helm, and cleans up after crashes.
//
//	go run ./e2e/cmd/e2e-cluster up [-nodes 2] [-image tar ...]
//	    starts the cluster, prints the kubeconfig, runs until SIGINT/SIGTERM,
//	    then stops it and leaves nothing behind.
//	go run ./e2e/cmd/e2e-cluster down
//	    removes whatever a crashed or KEEP=1 run left (processes, mounts,
//	    namespaces, cgroups, links).
//
// Needs root and the binaries of e2e/hack/build-bins.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

type images []string

func (i *images) String() string     { return strings.Join(*i, ",") }
func (i *images) Set(s string) error { *i = append(*i, s); return nil }

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: e2e-cluster up|down [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "up":
		err = up(ctx, log, os.Args[2:])
	case "down":
		err = down(ctx, log)
	default:
		err = fmt.Errorf("unknown command %q (want up or down)", os.Args[1])
	}
	if err != nil {
		log.Error("e2e-cluster", "err", err)
		os.Exit(1)
	}
}

func up(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	nodes := fs.Int("nodes", 2, "number of nodes (1 or 2)")
	var imgs images
	fs.Var(&imgs, "image", "image tarball to import on every node (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	t0 := time.Now()
	c, err := cluster.Start(ctx, nil, cluster.Options{Nodes: *nodes, Images: imgs, Logger: log})
	if err != nil {
		return err
	}
	fmt.Printf("cluster ready in %s: %s\nexport KUBECONFIG=%s\n(Ctrl-C stops it)\n", time.Since(t0).Round(time.Millisecond), c, c.Kubeconfig)
	<-ctx.Done()
	return c.Stop()
}

func down(ctx context.Context, log *slog.Logger) error {
	return cluster.Down(ctx, cluster.Options{Logger: log})
}

// Command ambit is ambit's single binary. Subcommands register themselves
// in their own files (ca.go: `ambit ca`, the built-in CA); the node daemon
// runs when no subcommand is given. main only dispatches and turns SIGTERM
// and SIGINT into context cancellation.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// subcommand is one `ambit <name>` mode. run parses its own flags and
// returns the process exit code (2 for bad usage).
type subcommand struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// subcommands is filled by init functions of the subcommand files.
var subcommands = map[string]subcommand{}

// defaultCommand runs when the first argument is not a subcommand (the node
// daemon sets it); nil means "print usage".
var defaultCommand func(ctx context.Context, args []string, stdout, stderr io.Writer) int

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if sc, ok := subcommands[args[0]]; ok {
			return sc.run(ctx, args[1:], stdout, stderr)
		}
		if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
			usage(stdout)
			return 0
		}
	}
	if defaultCommand != nil {
		return defaultCommand(ctx, args, stdout, stderr)
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "ambit: unknown subcommand %q (ambit help lists them)\n", args[0])
	} else {
		usage(stderr)
	}
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ambit <subcommand> [flags]")
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, subcommands[n].summary)
	}
}

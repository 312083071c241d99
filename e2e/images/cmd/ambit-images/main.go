//go:build linux

// Command ambit-images builds ambit's image tarball (see package
// github.com/ambit-mesh/ambit/e2e/images) for `make images`:
//
//	go run ./e2e/images/cmd/ambit-images -out out/images [-repository r] [-tag t] [-fips=false]
//
// It prints the image reference and the tarball path.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambit-mesh/ambit/e2e/images"
)

func main() {
	var o images.Options
	flag.StringVar(&o.OutDir, "out", "out/images", "directory for ambit.tar")
	flag.StringVar(&o.Repository, "repository", images.DefaultRepository, "image repository")
	flag.StringVar(&o.Tag, "tag", "", "image tag (default: the chart's appVersion)")
	flag.BoolVar(&o.FIPS, "fips", true, "also build /ambit-fips against Go's FIPS 140-3 module (the chart's fips: true runs it)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ambit-images: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	r, err := images.Build(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ambit-images:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s\n", r.Ref, r.Tar)
}

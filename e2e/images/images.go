//go:build linux

// Package images builds ambit's container image from the project's own
// static binaries, without Docker and without a registry: one image holding
// /ambit (the node daemon and `ambit ca`) and /ambit-cni (the CNI plugin and
// its installer), written as a docker-archive tarball that `ctr images
// import` (and the e2e cluster's ImportImage) loads.
//
// One image rather than two: the chart runs the CNI installer as an init
// container of the daemon pod and the daemon keeps the plugin installed
// from its own /ambit-cni, so the daemon's image must carry the plugin anyway;
// a second image would only add a second pull and a second tag to keep in
// step. The binaries are built with CGO_ENABLED=0 so the image needs no libc
// and no base layer.
package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// DefaultRepository is the chart's default image.repository.
const DefaultRepository = "ghcr.io/ambit-mesh/ambit"

// Options configures Build.
type Options struct {
	// OutDir receives ambit.tar. Required.
	OutDir string
	// Repository of the image reference. Optional, default DefaultRepository.
	Repository string
	// Tag of the image reference. Optional, default the chart's appVersion
	// (charts/ambit/Chart.yaml), which is also the chart's default tag.
	Tag string
	// FIPS also builds /ambit-fips: ./cmd/ambit against Go's frozen FIPS
	// 140-3 module (GOFIPS140=FIPSModule), which the chart runs with
	// fips: true. Off by default: it is a second full build (minutes on
	// 2 cores the first time) that only FIPS installs need.
	FIPS bool
}

// FIPSBinary is the image path of the daemon and CA built for FIPS mode.
const FIPSBinary = "/ambit-fips"

// FIPSModule is the GOFIPS140 value /ambit-fips is built with: the frozen
// module version v1.0.0 shipped with the Go toolchain (lib/fips140), the
// one its "certified" alias names in Go 1.26. Which certificate, if any,
// covers it is Go's status to check (docs/fips.md).
const FIPSModule = "v1.0.0"

// Result is what Build wrote.
type Result struct {
	Ref string // e.g. ghcr.io/ambit-mesh/ambit:0.1.0
	Tar string // path of the tarball
}

// Binaries maps each path in the image to the main package built for it.
var Binaries = map[string]string{
	"/ambit":     "./cmd/ambit",
	"/ambit-cni": "./cmd/ambit-cni",
}

// Build compiles the binaries (static, linux, this machine's GOARCH) and
// writes the image tarball <OutDir>/ambit.tar.
func Build(ctx context.Context, o Options) (Result, error) {
	if o.OutDir == "" {
		return Result{}, errors.New("images: OutDir is required")
	}
	root, err := cluster.ModuleRoot()
	if err != nil {
		return Result{}, err
	}
	if o.Repository == "" {
		o.Repository = DefaultRepository
	}
	if o.Tag == "" {
		if o.Tag, err = ChartAppVersion(filepath.Join(root, "charts", "ambit", "Chart.yaml")); err != nil {
			return Result{}, err
		}
	}
	tmp, err := os.MkdirTemp("", "ambit-images-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(tmp)
	files := map[string]string{}
	build := func(inImage, pkg string, env ...string) error {
		bin := filepath.Join(tmp, filepath.Base(inImage))
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", bin, pkg)
		cmd.Dir = root
		cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux"), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("images: go build %s %v: %w: %s", pkg, env, err, out)
		}
		files[inImage] = bin
		return nil
	}
	for inImage, pkg := range Binaries {
		if err := build(inImage, pkg); err != nil {
			return Result{}, err
		}
	}
	if o.FIPS {
		if err := build(FIPSBinary, Binaries["/ambit"], "GOFIPS140="+FIPSModule); err != nil {
			return Result{}, err
		}
	}
	r := Result{Ref: o.Repository + ":" + o.Tag, Tar: filepath.Join(o.OutDir, "ambit.tar")}
	img := cluster.Image{Ref: r.Ref, Files: files, Entrypoint: []string{"/ambit"}}
	if err := cluster.WriteImageTar(img, r.Tar); err != nil {
		return Result{}, fmt.Errorf("images: %w", err)
	}
	return r, nil
}

// ChartAppVersion reads appVersion from a Chart.yaml (a top-level
// `appVersion: "x"` line; quotes optional).
func ChartAppVersion(chartYAML string) (string, error) {
	b, err := os.ReadFile(chartYAML)
	if err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "appVersion:"); ok {
			v = strings.Trim(strings.TrimSpace(v), `"'`)
			if v == "" {
				break
			}
			return v, nil
		}
	}
	return "", fmt.Errorf("images: %s: no appVersion", chartYAML)
}

//go:build linux

package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// PauseImage is the sandbox image every node's containerd uses; the harness
// builds it from e2e/apps/pause and imports it before the kubelet starts.
const PauseImage = "ambit.test/pause:e2e"

// Image describes an image made of static files, with no base image.
type Image struct {
	Ref        string            // required: e.g. "ambit.test/echo:e2e"
	Files      map[string]string // required: path in the image -> file on the host
	Entrypoint []string          // required
	Env        []string          // optional
}

// WriteImageTar writes img as a docker-archive tarball at out (the format
// `ctr images import` reads). The config says linux/<GOARCH>: containerd
// ignores images whose platform it does not match.
func WriteImageTar(img Image, out string) error {
	ref, err := name.NewTag(img.Ref)
	if err != nil {
		return fmt.Errorf("image %q: %w", img.Ref, err)
	}
	layerTar, err := filesTar(img.Files)
	if err != nil {
		return fmt.Errorf("image %q: %w", img.Ref, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return fmt.Errorf("image %q layer: %w", img.Ref, err)
	}
	im, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return fmt.Errorf("image %q: %w", img.Ref, err)
	}
	cf, err := im.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = img.Entrypoint
	cf.Config.Env = append([]string{"PATH=/"}, img.Env...)
	im, err = mutate.ConfigFile(im, cf)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, ref, im); err != nil {
		return fmt.Errorf("image %q: write %s: %w", img.Ref, out, err)
	}
	return nil
}

// filesTar builds a layer holding files (image path -> host path), each
// executable, with their parent directories.
func filesTar(files map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	dirs := map[string]bool{}
	for _, p := range paths {
		rel := strings.TrimPrefix(filepath.Clean("/"+p), "/")
		for d := filepath.Dir(rel); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}); err != nil {
				return nil, err
			}
		}
		b, err := os.ReadFile(files[p])
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o755, Size: int64(len(b))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// BuildGoImage builds the Go main package pkg (an import path or a
// directory, resolved from the module root) as a static linux binary and
// writes a one-binary image ref to out, with the binary at /<base name> as
// its entrypoint.
func BuildGoImage(ctx context.Context, pkg, ref, out string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ambit-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, out)
	}
	entry := "/" + filepath.Base(pkg)
	return WriteImageTar(Image{Ref: ref, Files: map[string]string{entry: bin}, Entrypoint: []string{entry}}, out)
}

// ImportImage loads an image tarball into every node's containerd. Pods use
// it with imagePullPolicy: Never.
func (c *Cluster) ImportImage(ctx context.Context, tarPath string) error {
	for _, n := range c.Nodes {
		if err := n.importImage(ctx, tarPath); err != nil {
			return err
		}
	}
	return nil
}

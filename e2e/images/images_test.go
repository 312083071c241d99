//go:build linux

package images

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestChartAppVersion(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ text, want string }{
		{"apiVersion: v2\nname: x\nappVersion: \"1.2.3\"\n", "1.2.3"},
		{"appVersion: 0.4.0\n", "0.4.0"},
		{"apiVersion: v2\n", ""},
		{"appVersion: \"\"\n", ""},
	} {
		p := filepath.Join(dir, "Chart.yaml")
		if err := os.WriteFile(p, []byte(tc.text), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ChartAppVersion(p)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%q: got %q, want an error", tc.text, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.text, got, err, tc.want)
		}
	}
	if _, err := ChartAppVersion(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

func TestBuildRequiresOutDir(t *testing.T) {
	if _, err := Build(context.Background(), Options{}); err == nil {
		t.Fatal("Build without OutDir succeeded")
	}
}

// TestBuild builds the real image and reads it back: the reference, the
// platform containerd filters on, the entrypoint, and both binaries in the
// one layer, each an executable ELF.
func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: compiles two binaries")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := t.TempDir()
	r, err := Build(ctx, Options{OutDir: out, Repository: "ambit.test/ambit", Tag: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Ref != "ambit.test/ambit:t1" || r.Tar != filepath.Join(out, "ambit.tar") {
		t.Fatalf("result %+v", r)
	}
	tag, _ := name.NewTag(r.Ref)
	img, err := tarball.ImageFromPath(r.Tar, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/ambit"}) {
		t.Errorf("entrypoint %q", cf.Config.Entrypoint)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers, %v; want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	found := map[string]bool{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		head := make([]byte, 4)
		if _, err := io.ReadFull(tr, head); err != nil {
			t.Fatal(err)
		}
		if string(head) != "\x7fELF" || h.Mode&0o111 == 0 {
			t.Errorf("%s: not an executable ELF (mode %o)", h.Name, h.Mode)
		}
		found["/"+h.Name] = true
	}
	for p := range Binaries {
		if !found[p] {
			t.Errorf("image lacks %s (has %v)", p, found)
		}
	}
}

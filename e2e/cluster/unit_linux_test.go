//go:build linux

package cluster

import (
	"archive/tar"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestWriteImageTarIsRunnableImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	if err := WriteImageTar(Image{Ref: "ambit.test/app:t", Files: map[string]string{"/bin/app": bin}, Entrypoint: []string{"/bin/app"}}, out); err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("ambit.test/app:t")
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	// containerd filters out images whose platform does not match.
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/bin/app" {
		t.Errorf("entrypoint %v", cf.Config.Entrypoint)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v; want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := map[string]int64{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		found[h.Name] = h.Mode
	}
	if found["bin/"] == 0 || found["bin/app"] != 0o755 {
		t.Errorf("layer entries %v: want bin/ and an executable bin/app", found)
	}
}

func TestWriteImageTarRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	if err := WriteImageTar(Image{Ref: "Not A Ref", Files: map[string]string{}, Entrypoint: []string{"/x"}}, filepath.Join(dir, "a.tar")); err == nil {
		t.Error("a malformed reference was accepted")
	}
	if err := WriteImageTar(Image{Ref: "ambit.test/x:t", Files: map[string]string{"/x": filepath.Join(dir, "missing")}, Entrypoint: []string{"/x"}}, filepath.Join(dir, "b.tar")); err == nil {
		t.Error("a missing file was accepted")
	}
}

func TestNthIP(t *testing.T) {
	_, n, _ := net.ParseCIDR("172.31.250.0/24")
	if got := nthIP(n, 11).String(); got != "172.31.250.11" {
		t.Errorf("nthIP = %s", got)
	}
	_, n, _ = net.ParseCIDR("10.251.0.0/16")
	if got := nthIP(n, 257).String(); got != "10.251.1.1" {
		t.Errorf("nthIP carry = %s", got)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:            "/a/b",
		`/a\040b`:         "/a b",
		`/x\134y`:         `/x\y`,
		`/trailing\04`:    `/trailing\04`,
		`/not\09octal\0a`: `/not\09octal\0a`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckExplainsWhatIsMissing(t *testing.T) {
	err := Check(Options{BinDir: t.TempDir()})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Check with an empty bin dir = %v, want ErrUnavailable", err)
	}
	if want := "kube-apiserver (run e2e/hack/build-bins.sh)"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not mention %q", err, want)
	}
	if err := Check(Options{Nodes: 3}); err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("Nodes: 3 = %v, want a configuration error", err)
	}
}

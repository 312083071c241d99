package bpf

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedUpToDate regenerates the objects and bindings from the C
// sources with the go:generate lines of gen.go and fails if they differ
// from the committed ones (what `make generate && git diff --exit-code`
// checks in CI).
func TestGeneratedUpToDate(t *testing.T) {
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("needs clang, llvm-strip and libbpf headers (apt-get install clang llvm libbpf-dev) to regenerate")
	}
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	n := 0
	for _, line := range strings.Split(string(src), "\n") {
		cmdline, ok := strings.CutPrefix(line, "//go:generate go tool bpf2go ")
		if !ok {
			continue
		}
		n++
		args := append([]string{"tool", "bpf2go", "-output-dir", out, "-go-package", "bpf"}, splitArgs(cmdline)...)
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "GOPACKAGE=bpf")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("bpf2go %s: %v\n%s", cmdline, err, b)
		}
	}
	if n != 2 {
		t.Fatalf("found %d go:generate lines, want 2", n)
	}
	for _, f := range []string{"capture_bpfel.go", "capture_bpfel.o", "pod_bpfel.go", "pod_bpfel.o"} {
		fresh, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fresh, committed) {
			t.Errorf("%s differs from a fresh generation: run `go generate ./bpf` and commit", f)
		}
	}
}

// splitArgs splits a go:generate command line, honouring double quotes.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQ, have = !inQ, true
		case r == ' ' && !inQ:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

package e2e

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// TestCrashedRunIsReaped kills a process running a cluster with SIGKILL (no
// cleanup runs) and checks that it leaves processes and namespaces behind,
// and that cluster.Down then removes every trace.
func TestCrashedRunIsReaped(t *testing.T) {
	opts := cluster.Options{}
	cluster.SkipIfUnavailable(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute) // includes waiting for another package's cluster
	defer cancel()
	root, err := cluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(root, "e2e", ".work")
	bin := filepath.Join(t.TempDir(), "e2e-cluster")
	build := exec.CommandContext(ctx, "go", "build", "-buildvcs=false", "-o", bin, "./e2e/cmd/e2e-cluster")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build e2e-cluster: %v: %s", err, out)
	}

	up := exec.CommandContext(ctx, bin, "up", "-nodes", "1")
	up.Dir = root
	stdout, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	up.Stderr = &stderr
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "cluster ready") {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	if !<-ready {
		_ = up.Wait()
		t.Fatalf("e2e-cluster up did not report ready:\n%s", stderr.String())
	}

	// Crash: no Stop, no deferred cleanup.
	if err := up.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = up.Wait()
	left := strings.Join(cluster.MachineLeftovers(base), "\n")
	t.Logf("left by the crash:\n%s", left)
	// The containerd shims and CoreDNS's containers are not children of the
	// harness, so they outlive it; so do the namespaces and the bridge.
	for _, want := range []string{"processes", "network namespace", "link ", "mount ", "directory "} {
		if !strings.Contains(left, want) {
			t.Errorf("after the crash, want %q among the leftovers:\n%s", want, left)
		}
	}

	if err := cluster.Down(ctx, cluster.Options{}); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if left := cluster.MachineLeftovers(base); len(left) > 0 {
		t.Errorf("left behind after Down: %v", left)
	}
}

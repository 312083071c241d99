//go:build linux

package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseForeignRuns(t *testing.T) {
	mountinfo := strings.Join([]string{
		`46 26 0:4 net:[4026532173] /other/e2e/.work/run-fc16f0af/ns/n1.mnt rw - nsfs nsfs rw`,
		`47 26 0:4 mnt:[4026532174] /other/e2e/.work/run-fc16f0af/ns/n2.mnt rw - nsfs nsfs rw`,
		`48 26 0:4 net:[4026532175] /mine/.work/run-0a0b0c0d/ns/n1.mnt rw - nsfs nsfs rw`,
		`49 26 0:4 net:[4026532176] /run/netns/ambit-e2e-n1 rw - nsfs nsfs rw`,
		`50 26 0:51 / /ci\040space/run-deadbeef/ns/n1.mnt rw - nsfs nsfs rw`,
		`51 26 0:52 / /other/e2e/.work/run-12345678/ns/n1.mnt rw - tmpfs tmpfs rw`,
		`garbage`,
	}, "\n")
	got := parseForeignRuns(mountinfo, "/mine/.work")
	want := []string{"/other/e2e/.work/run-fc16f0af", "/ci space/run-deadbeef"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseForeignRuns = %q, want %q (own runs, non-run and non-nsfs mounts excluded, one entry per run)", got, want)
	}
}

// TestReapRemovesAnotherCheckoutsCrashedRun builds, with the real kernel,
// what a run killed in another checkout leaves: a node namespace pinned by a
// file under that checkout's run directory and its veth pair's host end,
// which carries the name the next run's node needs. The last CI run failed
// on exactly this ("RTNETLINK answers: File exists"): Reap looked only
// under its own base.
func TestReapRemovesAnotherCheckoutsCrashedRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and a veth pair")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute) // includes waiting for another package's cluster
	defer cancel()
	unlock, err := lockMachine(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	other := t.TempDir()
	runDir := filepath.Join(other, "run-0badc0de")
	pin := filepath.Join(runDir, "ns", "n9.mnt")
	if err := os.MkdirAll(filepath.Dir(pin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pin, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	veth := vethPrefix + "9"
	for _, c := range [][]string{
		{"unshare", "--net=" + pin, "true"},
		{"nsenter", "--net=" + pin, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", veth, "netns", "1"},
	} {
		if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	t.Cleanup(func() { // only if Reap failed
		_ = exec.Command("ip", "link", "del", veth).Run()
		_ = exec.Command("umount", "-l", pin).Run()
	})
	left := strings.Join(MachineLeftovers(filepath.Join(t.TempDir(), "base")), "\n")
	for _, want := range []string{"link " + veth, "run of another checkout " + runDir} {
		if !strings.Contains(left, want) {
			t.Errorf("leftovers before the reap lack %q:\n%s", want, left)
		}
	}

	base := filepath.Join(t.TempDir(), "base")
	if err := Reap(ctx, base, nil); err != nil {
		t.Fatalf("Reap: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", veth)); err == nil {
		t.Errorf("link %s still exists after Reap", veth)
	}
	if runs := foreignRuns(base); len(runs) > 0 {
		t.Errorf("namespace files still mounted after Reap: %v", runs)
	}
	if _, err := os.Stat(runDir); err == nil {
		t.Errorf("run directory %s still exists after Reap", runDir)
	}
}

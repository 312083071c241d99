package tunnelbench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be a soak endpoint: RunSoak starts it again
// with TUNNELBENCH_SOAK_ROLE set.
func TestMain(m *testing.M) {
	if role := os.Getenv("TUNNELBENCH_SOAK_ROLE"); role != "" {
		if err := SoakRole(role, os.Getenv("TUNNELBENCH_SOAK_DIR")); err != nil {
			fmt.Fprintln(os.Stderr, "soak role:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testSoakCommand(role, dir string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TUNNELBENCH_SOAK_ROLE="+role, "TUNNELBENCH_SOAK_DIR="+dir)
	return cmd
}

// TestSoakSmall runs the soak machinery at a small size (the real soak is
// BenchmarkSoak, or ambit-bench -soak): two endpoint processes, traffic on
// every connection, two rounds, and both endpoints back to their baseline
// goroutines and descriptors once the connections closed.
func TestSoakSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two processes and holds connections for a few seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := RunSoak(ctx, SoakConfig{
		Conns: 50, Hold: 2 * time.Second, Interval: 200 * time.Millisecond,
		Settle: 8 * time.Second, IdleTimeout: time.Second, Command: testSoakCommand,
	}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = rep.Table(&b)
	t.Log(b.String())
	if len(rep.Rounds) != 2 {
		t.Fatalf("%d rounds, want 2", len(rep.Rounds))
	}
	for k, rd := range rep.Rounds {
		if rd.Errors != 0 || rd.Exchanges < 50 {
			t.Fatalf("round %d: %d echoes, %d errors (%s); want at least one per connection and none failed", k+1, rd.Exchanges, rd.Errors, rd.FirstErr)
		}
		if len(rd.Endpoints) != 2 {
			t.Fatalf("round %d: %d endpoints", k+1, len(rd.Endpoints))
		}
		for _, e := range rd.Endpoints {
			if e.Peak.FDs < e.Baseline.FDs+50 {
				t.Errorf("round %d, %s endpoint: peak %d fds, baseline %d: the connections were not held there", k+1, e.Name, e.Peak.FDs, e.Baseline.FDs)
			}
			if e.After.Goroutines > e.Baseline.Goroutines || e.After.FDs > e.Baseline.FDs {
				t.Errorf("round %d, %s endpoint after closing: %v; baseline %v", k+1, e.Name, e.After, e.Baseline)
			}
		}
	}
}

// BenchmarkSoak is the soak at full size: SOAK_CONNS connections (default
// 5,000) held SOAK_TIME (default 1 minute; the figure is 10
// minutes) with traffic, two rounds. Run it with -benchtime 1x; make
// bench-soak runs the same through ambit-bench -soak.
func BenchmarkSoak(b *testing.B) {
	cfg := SoakConfig{Command: testSoakCommand}
	if v := os.Getenv("SOAK_CONNS"); v != "" {
		_, _ = fmt.Sscan(v, &cfg.Conns)
	}
	if v := os.Getenv("SOAK_TIME"); v != "" {
		cfg.Hold, _ = time.ParseDuration(v)
	}
	for b.Loop() {
		rep, err := RunSoak(context.Background(), cfg, b.Logf)
		if err != nil {
			b.Fatal(err)
		}
		_ = rep.Table(os.Stdout)
		for _, e := range rep.Rounds[0].Endpoints {
			b.ReportMetric(float64(e.Peak.FDs), e.Name+"-peak-fds")
			b.ReportMetric(float64(e.Peak.RSSKiB)/1024, e.Name+"-peak-rss-MiB")
			b.ReportMetric(float64(e.Peak.Goroutines), e.Name+"-peak-goroutines")
		}
	}
}

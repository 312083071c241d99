// Command ambit-bench compares direct TCP, a minimal mTLS splice and HBONE
// on this machine (see package tunnelbench) and prints a table; with -out it
// also writes the figures as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/tunnel/tunnelbench"
)

func main() {
	w := tunnelbench.DefaultWorkloads
	out := flag.String("out", "", "also write the figures as JSON to this file")
	flag.DurationVar(&w.ThroughputTime, "throughput-time", w.ThroughputTime, "duration of each bulk transfer")
	flag.IntVar(&w.RTTSamples, "rtt-samples", w.RTTSamples, "timed round trips")
	flag.DurationVar(&w.ConnectTime, "connect-time", w.ConnectTime, "duration of the new-connection run")
	quick := flag.Bool("quick", false, "small sizes, for a smoke run")
	paired := flag.Int("paired", 0, "instead of the full run: this many interleaved mtls/hbone block pairs of bulk throughput (1 and 8 streams), median ratios")
	pairedBlock := flag.Duration("paired-block", time.Second, "duration of each -paired transfer")
	soak := flag.Int("soak", 0, "instead of the full run: the soak, this many concurrent HBONE connections (5000 for the issue's figure) held with traffic, then closed; the two endpoints run as child processes")
	soakTime := flag.Duration("soak-time", time.Minute, "how long -soak holds the connections")
	soakInterval := flag.Duration("soak-interval", 2*time.Second, "each -soak connection exchanges 1 KiB this often")
	soakRounds := flag.Int("soak-rounds", 2, "with -soak: open-hold-close rounds in the same endpoint processes (a leak grows every round)")
	soakProfiles := flag.String("soak-profiles", "", "with -soak: write each endpoint's heap profile, taken after the connections closed, into this directory")
	soakRole := flag.String("soak-role", "", "internal: run as a -soak endpoint process")
	soakDir := flag.String("soak-dir", "", "internal: the -soak material of an endpoint process")
	flag.Parse()
	if *soakRole != "" {
		if err := tunnelbench.SoakRole(*soakRole, *soakDir); err != nil {
			fmt.Fprintln(os.Stderr, "ambit-bench:", err)
			os.Exit(1)
		}
		return
	}
	if *quick {
		w = tunnelbench.Workloads{ThroughputTime: 300 * time.Millisecond, RTTSamples: 300, ConnectTime: 300 * time.Millisecond, ConnectWorkers: 2, IdleConns: []int{100}}
	}
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "ambit-bench: raising the open file limit:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *soak > 0 {
		if err := runSoak(ctx, *soak, *soakRounds, *soakTime, *soakInterval, *soakProfiles, *out); err != nil {
			fmt.Fprintln(os.Stderr, "ambit-bench:", err)
			os.Exit(1)
		}
		return
	}
	if *paired > 0 {
		ps, err := tunnelbench.RunPaired(ctx, *paired, *pairedBlock, []int{1, 8}, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
		if err == nil {
			err = tunnelbench.PairedTable(os.Stdout, ps)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "ambit-bench:", err)
			os.Exit(1)
		}
		return
	}
	rep, err := tunnelbench.Run(ctx, w, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "ambit-bench:", err)
		os.Exit(1)
	}
	if err := rep.Table(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ambit-bench:", err)
		os.Exit(1)
	}
	if *out != "" {
		f, err := os.Create(*out)
		if err == nil {
			err = rep.JSON(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "ambit-bench:", err)
			os.Exit(1)
		}
	}
}

// runSoak runs tunnelbench.RunSoak with this program as the endpoint
// processes.
func runSoak(ctx context.Context, conns, rounds int, hold, interval time.Duration, profiles, out string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	rep, err := tunnelbench.RunSoak(ctx, tunnelbench.SoakConfig{
		Conns: conns, Rounds: rounds, Hold: hold, Interval: interval, ProfileDir: profiles,
		Command: func(role, dir string) *exec.Cmd {
			return exec.Command(self, "-soak-role", role, "-soak-dir", dir)
		},
	}, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		return err
	}
	if err := rep.Table(os.Stdout); err != nil {
		return err
	}
	if out == "" {
		return nil
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, append(js, '\n'), 0o644)
}

// raiseFileLimit lifts the open-file limit: 10,000 idle connections through
// the mTLS splice hold six descriptors each. Root may raise the hard limit
// too; anyone else gets the soft limit raised to the hard one.
func raiseFileLimit() error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	const want = 1 << 18
	if l.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			return nil
		}
	}
	l.Cur = l.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

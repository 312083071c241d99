// Command ambit-bench compares direct TCP, a minimal mTLS splice and HBONE
// on this machine (see package tunnelbench) and prints a table; with -out it
// also writes the figures as JSON.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
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
	flag.Parse()
	if *quick {
		w = tunnelbench.Workloads{ThroughputTime: 300 * time.Millisecond, RTTSamples: 300, ConnectTime: 300 * time.Millisecond, ConnectWorkers: 2, IdleConns: []int{100}}
	}
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "ambit-bench: raising the open file limit:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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

package tunnelbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"text/tabwriter"
)

// Result holds one path's figures. A figure that was not measured is nil
// and left out of the JSON, never filled in.
type Result struct {
	// Throughput1Gbps and Throughput8Gbps: bulk app->backend transfer with
	// one and with eight concurrent connections, Gbit/s at the backend.
	Throughput1Gbps *float64 `json:"throughput_1_gbps,omitempty"`
	Throughput8Gbps *float64 `json:"throughput_8_gbps,omitempty"`
	// RTTP50us and RTTP99us: 1 KiB request/response round trip on one
	// persistent connection, microseconds.
	RTTP50us *float64 `json:"rtt_p50_us,omitempty"`
	RTTP99us *float64 `json:"rtt_p99_us,omitempty"`
	// ConnectsPerS: connections per second, each connect, one 1 KiB
	// exchange, close (through the warm pool for hbone).
	ConnectsPerS *float64 `json:"connects_per_s,omitempty"`
	// IdleConnKiB: memory (Go heap and stacks) per idle connection at the
	// largest idle count. For direct it is what the app and backend hold
	// per connection; for a tunnel it is what ONE endpoint holds per
	// tunneled connection: (path growth - direct growth) / 2.
	IdleConnKiB *float64 `json:"idle_conn_kib,omitempty"`
	// IdleConnKiBAt is IdleConnKiB at each measured connection count.
	IdleConnKiBAt map[string]float64 `json:"idle_conn_kib_by_conns,omitempty"`
	// CPUSecondsPerGB: process CPU (user+system) per GB moved during the
	// one-connection bulk transfer; it includes the app and the backend.
	CPUSecondsPerGB *float64 `json:"cpu_s_per_gb,omitempty"`
}

// Report is the outcome of Run, keyed by path name.
type Report map[string]*Result

// Run measures every workload through every path. logf, if not nil,
// receives progress lines.
func Run(ctx context.Context, w Workloads, logf func(format string, args ...any)) (Report, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	e, err := newEnv()
	if err != nil {
		return nil, err
	}
	defer e.backend.close()
	idle, skipped := FeasibleIdleConns(w.IdleConns)
	for _, n := range skipped {
		logf("idle memory at %d connections not measured: it needs about %d open files, more than this process may open (ulimit -n)", n, n*fdsPerIdleConn)
	}
	w.IdleConns = idle
	rep := Report{}
	rawIdle := map[string]map[int]float64{}
	for _, name := range PathNames {
		p, err := e.newPath(name)
		if err != nil {
			return nil, err
		}
		r := &Result{}
		rep[name] = r
		err = measure(ctx, p, e.backend, w, r, rawIdle, logf)
		p.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	perEndpoint(rep, rawIdle, w.IdleConns)
	return rep, nil
}

func measure(ctx context.Context, p Path, b *backend, w Workloads, r *Result, rawIdle map[string]map[int]float64, logf func(string, ...any)) error {
	name := p.Name()
	g1, cpu, err := throughput(ctx, p, b, 1, w.ThroughputTime)
	if err != nil {
		return fmt.Errorf("throughput 1: %w", err)
	}
	r.Throughput1Gbps, r.CPUSecondsPerGB = &g1, &cpu
	logf("%s: 1 stream %.2f Gbit/s, %.2f CPU s/GB", name, g1, cpu)
	g8, _, err := throughput(ctx, p, b, 8, w.ThroughputTime)
	if err != nil {
		return fmt.Errorf("throughput 8: %w", err)
	}
	r.Throughput8Gbps = &g8
	logf("%s: 8 streams %.2f Gbit/s", name, g8)
	p50, p99, err := rtt(ctx, p, w.RTTSamples)
	if err != nil {
		return fmt.Errorf("rtt: %w", err)
	}
	r.RTTP50us, r.RTTP99us = &p50, &p99
	logf("%s: rtt p50 %.1f us, p99 %.1f us", name, p50, p99)
	cps, err := connects(ctx, p, w.ConnectWorkers, w.ConnectTime)
	if err != nil {
		return fmt.Errorf("connects: %w", err)
	}
	r.ConnectsPerS = &cps
	logf("%s: %.0f connections/s", name, cps)
	rawIdle[name] = map[int]float64{}
	for _, n := range w.IdleConns {
		kib, err := idleMemory(ctx, p, b, n)
		if err != nil {
			return fmt.Errorf("idle %d: %w", n, err)
		}
		rawIdle[name][n] = kib
		logf("%s: %d idle connections, %.1f KiB each (whole process)", name, n, kib)
	}
	return nil
}

// perEndpoint turns whole-process idle growth into the documented figure.
func perEndpoint(rep Report, raw map[string]map[int]float64, counts []int) {
	if len(counts) == 0 {
		return
	}
	largest := counts[len(counts)-1]
	for name, r := range rep {
		r.IdleConnKiBAt = map[string]float64{}
		for _, n := range counts {
			v := raw[name][n]
			if name != "direct" {
				v = (v - raw["direct"][n]) / 2
			}
			r.IdleConnKiBAt[strconv.Itoa(n)] = v
			if n == largest {
				r.IdleConnKiB = &v
			}
		}
	}
}

// JSON writes the report as the JSON object `make bench` promises.
func (rep Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// Table writes the figures with each one's ratio to direct TCP and to the
// mTLS splice.
func (rep Report) Table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tdirect\tmtls\thbone\thbone/direct\thbone/mtls\tmtls/direct\ttarget\tverdict\t")
	// target is issue 13's goal for hbone/mtls: at least min, or at most
	// max (zero: none).
	rows := []struct {
		name     string
		get      func(*Result) *float64
		min, max float64
	}{
		{"throughput 1 stream (Gbit/s)", func(r *Result) *float64 { return r.Throughput1Gbps }, 1.0, 0},
		{"throughput 8 streams (Gbit/s)", func(r *Result) *float64 { return r.Throughput8Gbps }, 1.0, 0},
		{"RTT p50 (us)", func(r *Result) *float64 { return r.RTTP50us }, 0, 1.1},
		{"RTT p99 (us)", func(r *Result) *float64 { return r.RTTP99us }, 0, 0},
		{"new connections/s", func(r *Result) *float64 { return r.ConnectsPerS }, 3.0, 0},
		{"idle KiB/conn (tunnels: per endpoint)", func(r *Result) *float64 { return r.IdleConnKiB }, 0, 0},
		{"CPU s/GB (whole process)", func(r *Result) *float64 { return r.CPUSecondsPerGB }, 0, 0},
	}
	for _, row := range rows {
		v := map[string]*float64{}
		for _, name := range PathNames {
			if r := rep[name]; r != nil {
				v[name] = row.get(r)
			}
		}
		target, verdict := "", ""
		if row.min > 0 || row.max > 0 {
			target, verdict = fmt.Sprintf(">= %.1fx", row.min), "-"
			if row.max > 0 {
				target = fmt.Sprintf("<= %.1fx", row.max)
			}
			if h, m := v["hbone"], v["mtls"]; h != nil && m != nil && *m != 0 {
				r := *h / *m
				verdict = "met"
				if (row.min > 0 && r < row.min) || (row.max > 0 && r > row.max) {
					verdict = "MISSED"
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", row.name,
			num(v["direct"]), num(v["mtls"]), num(v["hbone"]),
			ratio(v["hbone"], v["direct"]), ratio(v["hbone"], v["mtls"]), ratio(v["mtls"], v["direct"]), target, verdict)
	}
	if r := rep["hbone"]; r != nil && len(r.IdleConnKiBAt) > 0 {
		keys := make([]string, 0, len(r.IdleConnKiBAt))
		for k := range r.IdleConnKiBAt {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { a, _ := strconv.Atoi(keys[i]); b, _ := strconv.Atoi(keys[j]); return a < b })
		for _, k := range keys {
			row := "idle KiB/conn at " + k
			cell := func(name string) string {
				if rr := rep[name]; rr != nil {
					if v, ok := rr.IdleConnKiBAt[k]; ok {
						return num(&v)
					}
				}
				return "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\t\t\t\t\t\n", row, cell("direct"), cell("mtls"), cell("hbone"))
		}
	}
	return tw.Flush()
}

func num(v *float64) string {
	if v == nil {
		return "-"
	}
	switch {
	case *v >= 100:
		return strconv.FormatFloat(*v, 'f', 0, 64)
	case *v >= 10:
		return strconv.FormatFloat(*v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(*v, 'f', 2, 64)
	}
}

func ratio(a, b *float64) string {
	if a == nil || b == nil || *b == 0 {
		return "-"
	}
	return strconv.FormatFloat(*a / *b, 'f', 2, 64) + "x"
}

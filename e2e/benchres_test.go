package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// What one BenchmarkMesh measurement asks of the echo client (its
// defaults for rr and connect, a fixed bulk size).
const (
	benchRRCount   = 5000
	benchConnCount = 1000
	benchWarmup    = 100
	benchBulkRuns  = 3
	benchBulkBytes = 256 << 20
)

// benchRounds is BENCH_ROUNDS (default and minimum 3).
func benchRounds() int {
	n, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS"))
	if err != nil || n < 3 {
		return 3
	}
	return n
}

// roundFig is one measurement: a round, a state (plain, mesh), a place
// (same, cross) and its figures.
type roundFig struct {
	Round int                `json:"round"`
	State string             `json:"state"`
	Place string             `json:"place"`
	Fig   map[string]float64 `json:"figures"`
	Load  string             `json:"load"`
}

func (r *benchRun) record(round int, state, place string, fig map[string]float64) {
	r.rounds = append(r.rounds, roundFig{Round: round, State: state, Place: place, Fig: fig, Load: loadAvg()})
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// daemonSampler reads the node daemons' CPU time and RSS from /proc every
// 100 ms while the benchmark runs.
type daemonSampler struct {
	pids   []int
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	series []daemonSample
}

type daemonSample struct {
	at     time.Time
	cpuS   float64 // utime+stime of all daemons
	rssMiB float64 // the largest daemon's
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux
// for every architecture Go supports here).
const clockTicks = 100

func (r *benchRun) startSampler(ctx context.Context) {
	cs := r.c.Clientset()
	ds, err := cs.CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ambit"})
	if err != nil {
		r.b.Fatal(err)
	}
	s := &daemonSampler{stop: make(chan struct{}), done: make(chan struct{})}
	for _, p := range ds.Items {
		pids, err := cluster.PodProcesses(string(p.UID), "ambit")
		if err != nil || len(pids) != 1 {
			r.b.Fatalf("daemon %s: process: %v %v", p.Name, pids, err)
		}
		s.pids = append(s.pids, pids[0])
	}
	r.b.Logf("sampling daemons' CPU and RSS: pids %v", s.pids)
	r.sampler = s
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			var cpu, rss float64
			for _, pid := range s.pids {
				c, m := procUsage(pid)
				cpu += c
				rss = max(rss, m)
			}
			s.mu.Lock()
			s.series = append(s.series, daemonSample{at: time.Now(), cpuS: cpu, rssMiB: rss})
			s.mu.Unlock()
			select {
			case <-t.C:
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
}

func (r *benchRun) stopSampler() {
	if r.sampler != nil {
		close(r.sampler.stop)
		<-r.sampler.done
	}
}

// procUsage is a process's CPU seconds (user+system) and RSS in MiB.
func procUsage(pid int) (cpuS, rssMiB float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// Fields after the command (which may hold spaces) in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) > 22 {
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		cpuS = (ut + st) / clockTicks
		pages, _ := strconv.ParseFloat(f[21], 64)
		rssMiB = pages * float64(os.Getpagesize()) / (1 << 20)
	}
	return cpuS, rssMiB
}

// cpuBetween is the daemons' CPU seconds between two instants (the samples
// just before from and just after to).
func (r *benchRun) cpuBetween(from, to time.Time) float64 {
	s := r.sampler
	s.mu.Lock()
	defer s.mu.Unlock()
	var a, b *daemonSample
	for i := range s.series {
		x := &s.series[i]
		if !x.at.After(from) {
			a = x
		}
		if b == nil && !x.at.Before(to) {
			b = x
		}
	}
	if a == nil || b == nil {
		return 0
	}
	return b.cpuS - a.cpuS
}

func (r *benchRun) rssMaxBetween(from, to time.Time) float64 {
	s := r.sampler
	s.mu.Lock()
	defer s.mu.Unlock()
	var m float64
	for _, x := range s.series {
		if !x.at.Before(from) && !x.at.After(to) {
			m = max(m, x.rssMiB)
		}
	}
	return m
}

// profile takes a CPU profile of every daemon from its admin port
// (/debug/pprof/profile) while a mesh measurement of round 1 runs, into
// BENCH_PROFILE (a directory), when set. The returned func waits for it.
func (r *benchRun) profile(ctx context.Context, round int, state, place string) func() {
	dir := os.Getenv("BENCH_PROFILE")
	if dir == "" || round != 1 || state != "mesh" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.b.Error(err)
		return func() {}
	}
	var wg sync.WaitGroup
	for i, pid := range r.sampler.pids {
		out := filepath.Join(dir, fmt.Sprintf("daemon%d-%s.pprof", i+1, place))
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(pid), "-n", "curl", "-sf", "-o", out,
				"http://127.0.0.1:15000/debug/pprof/profile?seconds=20")
			if b, err := cmd.CombinedOutput(); err != nil {
				r.b.Logf("profile of daemon pid %d: %v %s", pid, err, b)
			}
		}()
	}
	return wg.Wait
}

func benchMillis(b interface{ Fatalf(string, ...any) }, kv map[string]string, k string) time.Time {
	v, err := strconv.ParseInt(kv[k], 10, 64)
	if err != nil {
		b.Fatalf("result %v: field %s: %v", kv, k, err)
	}
	return time.UnixMilli(v)
}

// ratioKeys are the ratios the goals judge (mesh / plain) and the
// figure each divides.
var ratioKeys = []struct{ key, fig string }{
	{"rr_p50_ratio", "rr_p50_us"},
	{"rr_p99_ratio", "rr_p99_us"},
	{"connect_p50_ratio", "connect_p50_us"},
	{"bulk_up_ratio", "bulk_up_MBps"},
	{"bulk_down_ratio", "bulk_down_MBps"},
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// summary is, per place, the median over rounds of each figure per state,
// and the median over rounds of each round's mesh/plain ratio.
func (r *benchRun) summary() map[string]any {
	out := map[string]any{}
	for place, key := range map[string]string{"same": "same_node", "cross": "across"} {
		per := map[string]map[string][]float64{"plain": {}, "mesh": {}}
		ratios := map[string][]float64{}
		byRound := map[int]map[string]map[string]float64{}
		for _, rf := range r.rounds {
			if rf.Place != place {
				continue
			}
			for k, v := range rf.Fig {
				per[rf.State][k] = append(per[rf.State][k], v)
			}
			if byRound[rf.Round] == nil {
				byRound[rf.Round] = map[string]map[string]float64{}
			}
			byRound[rf.Round][rf.State] = rf.Fig
		}
		for _, st := range byRound {
			p, m := st["plain"], st["mesh"]
			if p == nil || m == nil {
				continue
			}
			for _, rk := range ratioKeys {
				if p[rk.fig] > 0 {
					ratios[rk.key] = append(ratios[rk.key], m[rk.fig]/p[rk.fig])
				}
			}
		}
		sec := map[string]any{}
		for _, st := range []string{"plain", "mesh"} {
			m := map[string]float64{}
			for k, v := range per[st] {
				m[k] = median(v)
				r.fig[k+"_"+st+"_"+place] = m[k]
			}
			sec[st] = m
		}
		for _, rk := range ratioKeys {
			sec[rk.key] = median(ratios[rk.key])
			sec[rk.key+"_rounds"] = ratios[rk.key]
		}
		out[key] = sec
	}
	return out
}

// writeJSON writes the run's figures to path (BENCH_OUT), if set.
func (r *benchRun) writeJSON(path string) error {
	doc := r.summary()
	doc["date"] = time.Now().UTC().Format(time.RFC3339)
	doc["command"] = "make bench-e2e"
	doc["rounds"] = benchRounds()
	doc["load"] = r.loads
	doc["measurements"] = r.rounds
	other := map[string]float64{}
	for _, k := range []string{"cluster_start_s", "cluster_start_wait_s", "helm_install_s", "label_to_hbone_ms", "label_to_hbone_log_ms", "label_fail_conns"} {
		if v, ok := r.fig[k]; ok {
			other[k] = v
		}
	}
	doc["other"] = other
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("BENCH_OUT: %w", err)
	}
	r.b.Logf("figures written to %s", path)
	return nil
}

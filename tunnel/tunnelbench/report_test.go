package tunnelbench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestRunSmall runs every workload through every path at small sizes and
// checks that each figure was measured, is plausible, and reaches both the
// table and the JSON.
func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("measures three paths for a few seconds")
	}
	w := Workloads{
		ThroughputTime: 200 * time.Millisecond,
		RTTSamples:     200,
		ConnectTime:    200 * time.Millisecond,
		ConnectWorkers: 2,
		IdleConns:      []int{50},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, w, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range PathNames {
		r := rep[name]
		if r == nil {
			t.Fatalf("no result for %s", name)
		}
		for fig, v := range map[string]*float64{
			"throughput_1": r.Throughput1Gbps, "throughput_8": r.Throughput8Gbps,
			"rtt_p50": r.RTTP50us, "rtt_p99": r.RTTP99us, "connects": r.ConnectsPerS,
			"cpu": r.CPUSecondsPerGB, "idle": r.IdleConnKiB,
		} {
			if v == nil {
				t.Errorf("%s: %s not measured", name, fig)
			} else if fig != "idle" && *v <= 0 {
				t.Errorf("%s: %s = %v, want > 0", name, fig, *v)
			}
		}
		if *r.RTTP99us < *r.RTTP50us {
			t.Errorf("%s: p99 %v < p50 %v", name, *r.RTTP99us, *r.RTTP50us)
		}
	}
	var js bytes.Buffer
	if err := rep.JSON(&js); err != nil {
		t.Fatal(err)
	}
	var decoded map[string]map[string]any
	if err := json.Unmarshal(js.Bytes(), &decoded); err != nil {
		t.Fatal(err)
	}
	for _, name := range PathNames {
		for _, key := range []string{"throughput_1_gbps", "throughput_8_gbps", "rtt_p50_us", "rtt_p99_us", "connects_per_s", "idle_conn_kib", "cpu_s_per_gb"} {
			if _, ok := decoded[name][key]; !ok {
				t.Errorf("JSON %s lacks %s", name, key)
			}
		}
	}
	var tab bytes.Buffer
	if err := rep.Table(&tab); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tab.String(), "hbone/mtls") || strings.Count(tab.String(), "\n") < 8 {
		t.Errorf("table incomplete:\n%s", tab.String())
	}
}

// TestReportLeavesUnmeasuredOut checks that a missing figure stays out of
// the JSON rather than appearing as zero.
func TestReportLeavesUnmeasuredOut(t *testing.T) {
	v := 1.5
	rep := Report{"direct": {Throughput1Gbps: &v}}
	var js bytes.Buffer
	if err := rep.JSON(&js); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(js.String(), "rtt_p50_us") {
		t.Errorf("unmeasured figure present: %s", js.String())
	}
	if !strings.Contains(js.String(), `"throughput_1_gbps": 1.5`) {
		t.Errorf("measured figure missing: %s", js.String())
	}
}

// TestRunPairedSmall runs two short paired blocks per stream count and
// checks the figures and the table line.
func TestRunPairedSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("measures two paths for a few seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ps, err := RunPaired(ctx, 2, 100*time.Millisecond, []int{1, 8}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Streams != 1 || ps[1].Streams != 8 {
		t.Fatalf("results %+v", ps)
	}
	for _, p := range ps {
		if len(p.Ratios) != 2 || len(p.HBONE) != 2 || len(p.MTLS) != 2 {
			t.Fatalf("%d streams: %d ratios, %d hbone, %d mtls figures; want 2 each", p.Streams, len(p.Ratios), len(p.HBONE), len(p.MTLS))
		}
		for i, r := range p.Ratios {
			if !(p.HBONE[i] > 0 && p.MTLS[i] > 0) || r != p.HBONE[i]/p.MTLS[i] {
				t.Fatalf("%d streams, block %d: hbone %v mtls %v ratio %v", p.Streams, i, p.HBONE[i], p.MTLS[i], r)
			}
		}
	}
	var buf bytes.Buffer
	if err := PairedTable(&buf, ps); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "throughput 8 stream(s), 2 paired blocks: hbone/mtls median") {
		t.Fatalf("table:\n%s", buf.String())
	}
}

// TestTableVerdicts: the table judges hbone/mtls against issue 13's
// targets: at least 1.0x throughput, at most 1.1x RTT p50, at least 3x new
// connections.
func TestTableVerdicts(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	rep := Report{
		"direct": {Throughput1Gbps: f(10), Throughput8Gbps: f(10), RTTP50us: f(10), ConnectsPerS: f(1000)},
		"mtls":   {Throughput1Gbps: f(4), Throughput8Gbps: f(4), RTTP50us: f(50), ConnectsPerS: f(100)},
		"hbone":  {Throughput1Gbps: f(4.2), Throughput8Gbps: f(3.5), RTTP50us: f(56), ConnectsPerS: f(350)},
	}
	var tab bytes.Buffer
	if err := rep.Table(&tab); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"throughput 1 stream": "met", "throughput 8 streams": "MISSED", "RTT p50": "MISSED", "new connections/s": "met"}
	for _, l := range strings.Split(tab.String(), "\n") {
		for row, v := range want {
			if strings.HasPrefix(strings.TrimSpace(l), row) {
				if f := strings.Fields(l); f[len(f)-1] != v {
					t.Errorf("row %q: verdict %q, want %q:\n%s", row, f[len(f)-1], v, tab.String())
				}
				delete(want, row)
			}
		}
	}
	if len(want) > 0 {
		t.Errorf("rows missing %v:\n%s", want, tab.String())
	}
}

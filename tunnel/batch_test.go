package tunnel

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// TestRecordBatching: large frames (several TLS records gathered into one
// write) and small ones both arrive whole and in order, both ways, with
// batching on and off.
func TestRecordBatching(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("batch=%v", on), func(t *testing.T) {
			old := batchRecords
			batchRecords = on
			defer func() { batchRecords = old }()
			e := newEnv(t, envOpt{})
			ap := front(t, func() (net.Conn, error) { return e.cli.Dial(context.Background(), e.req()) },
				func(app, tun net.Conn) { _, _, _ = Splice(context.Background(), app, tun, Settings{}) })
			c := dialTCP(t, ap)
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			data := make([]byte, 3<<20+4321)
			for i := range data {
				data[i] = byte(i*31 + i>>11)
			}
			go func() {
				for off := 0; off < len(data); {
					n := min(len(data)-off, 1+off%70000) // small and large writes
					if _, err := c.Write(data[off : off+n]); err != nil {
						return
					}
					off += n
				}
				c.CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil || !slices.Equal(got, data) {
				t.Fatalf("echo through HBONE: %d of %d bytes, equal %v, err %v", len(got), len(data), slices.Equal(got, data), err)
			}
		})
	}
}

// BenchmarkBatchRatio interleaves 64 MiB one-way HBONE transfers with
// record batching off and on, pair after pair, and reports the medians of
// on/off for throughput and process CPU per byte.
//
//	go test -run '^$' -bench BatchRatio -benchtime 1x -count 3 ./tunnel
func BenchmarkBatchRatio(b *testing.B) {
	e := newEnv(b, envOpt{app: sinkApp})
	set := tuneSettings()
	ap := front(b, func() (net.Conn, error) { return e.cli.Dial(context.Background(), e.req()) },
		func(app, tun net.Conn) { _, _, _ = Splice(context.Background(), app, tun, set) })
	old := batchRecords
	defer func() { batchRecords = old }()
	const size = 64 << 20
	buf := make([]byte, 128<<10)
	run := func(on bool) (mbps, cpuPerGB float64) {
		batchRecords = on
		c := dialTCP(b, ap)
		defer c.Close()
		t0, c0 := time.Now(), cpuTime()
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.CloseWrite()
		if got, _ := io.ReadAll(c); string(got) != fmt.Sprint(size) {
			b.Fatalf("sink counted %q", got)
		}
		return size / time.Since(t0).Seconds() / 1e6, (cpuTime() - c0).Seconds() / (size / 1e9)
	}
	run(true) // warm the pooled tunnel
	for range b.N {
		var tput, cpu []float64
		for i := range 10 {
			first := i%2 == 0
			m1, c1 := run(first)
			m2, c2 := run(!first)
			if !first {
				m1, m2, c1, c2 = m2, m1, c2, c1
			}
			tput, cpu = append(tput, m1/m2), append(cpu, c1/c2)
		}
		slices.Sort(tput)
		slices.Sort(cpu)
		b.ReportMetric((tput[4]+tput[5])/2, "on/off-tput")
		b.ReportMetric((cpu[4]+cpu[5])/2, "on/off-cpu")
	}
}

package tunnel

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// plainProxy accepts on loopback and Splices each connection to app: the
// shape of the daemon's plaintext legs (same-node shortcut, passthrough,
// plaintext inbound).
func plainProxy(tb testing.TB, app func(net.Conn)) string {
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		ln.Close()
		appLn.Close()
		wg.Wait()
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := appLn.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); app(c) }()
		}
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", appLn.Addr().String())
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); Splice(context.Background(), c, up, Settings{}) }()
		}
	}()
	return ln.Addr().String()
}

// TestCopyPlainSplice: between two sockets the bytes arrive whole and in
// order both ways, half-closes carry, for small messages (the small-buffer
// loop) and bulk (splice runs longer than spliceChunk), with splice on and
// off.
func TestCopyPlainSplice(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run("splice="+strconv.FormatBool(on), func(t *testing.T) {
			old := spliceSockets
			spliceSockets = on
			defer func() { spliceSockets = old }()
			addr := plainProxy(t, sinkApp)
			for _, size := range []int{1, 1500, DefaultIdleReadSize, DefaultIdleReadSize + 1, spliceChunk + 12345} {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(20 * time.Second))
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(i * 7)
				}
				go func() {
					c.Write(data)
					c.(*net.TCPConn).CloseWrite()
				}()
				got, err := io.ReadAll(c)
				c.Close()
				if err != nil || string(got) != strconv.Itoa(size) {
					t.Fatalf("size %d: the app counted %q (%v)", size, got, err)
				}
			}
			// Echo: order and content both ways.
			addr = plainProxy(t, echoApp)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			data := make([]byte, spliceChunk+777)
			for i := range data {
				data[i] = byte(i * 13)
			}
			go func() {
				c.Write(data)
				c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil || len(got) != len(data) || string(got) != string(data) {
				t.Fatalf("echo: %d of %d bytes, equal %v, err %v", len(got), len(data), string(got) == string(data), err)
			}
		})
	}
}

// BenchmarkPlainSplice compares the two ways of copying between plaintext
// sockets in alternating sub-benchmarks (run with -count N to interleave):
// a 1 KiB echo on one connection and one-way bulk.
//
//	go test -run '^$' -bench PlainSplice -count 5 ./tunnel
func BenchmarkPlainSplice(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "copy"
		if on {
			name = "splice"
		}
		old := spliceSockets
		spliceSockets = on
		b.Run(name+"/rtt-1KiB", func(b *testing.B) {
			c, err := net.Dial("tcp", plainProxy(b, echoApp))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg, buf := make([]byte, 1024), make([]byte, 1024)
			b.SetBytes(1024)
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/bulk", func(b *testing.B) {
			c, err := net.Dial("tcp", plainProxy(b, sinkApp))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 128<<10)
			b.SetBytes(int64(len(buf)))
			t0 := cpuTime()
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.(*net.TCPConn).CloseWrite()
			io.ReadAll(c)
			b.ReportMetric((cpuTime()-t0).Seconds()/(float64(b.N)*float64(len(buf))/1e9), "cpu-s/GB")
		})
		spliceSockets = old
	}
}

// BenchmarkPlainSpliceRatio interleaves 64 MiB one-way transfers through
// the plaintext proxy with splice off and on, pair after pair, and reports
// the medians of splice/copy for throughput and for process CPU per byte:
// the machine's drift falls on both alike.
//
//	go test -run '^$' -bench PlainSpliceRatio -benchtime 1x ./tunnel
func BenchmarkPlainSpliceRatio(b *testing.B) {
	addr := plainProxy(b, sinkApp)
	old := spliceSockets
	defer func() { spliceSockets = old }()
	const size = 64 << 20
	buf := make([]byte, 128<<10)
	run := func(on bool) (mbps, cpuPerGB float64) {
		spliceSockets = on
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		t0, c0 := time.Now(), cpuTime()
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		if got, _ := io.ReadAll(c); string(got) != strconv.Itoa(size) {
			b.Fatalf("sink counted %q", got)
		}
		return size / time.Since(t0).Seconds() / 1e6, (cpuTime() - c0).Seconds() / (size / 1e9)
	}
	for range b.N {
		var tput, cpu []float64
		for i := range 10 {
			first := i%2 == 0 // alternate which goes first
			m1, c1 := run(first)
			m2, c2 := run(!first)
			if !first {
				m1, m2, c1, c2 = m2, m1, c2, c1
			}
			tput, cpu = append(tput, m1/m2), append(cpu, c1/c2)
		}
		b.ReportMetric(medianOf(tput), "splice/copy-tput")
		b.ReportMetric(medianOf(cpu), "splice/copy-cpu")
	}
}

func medianOf(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

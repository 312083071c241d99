package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchServer serves the bench protocol on a loopback port until the test ends.
func benchServer(t *testing.T) (string, *syncBuf) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuf
	done := make(chan error, 1)
	go func() { done <- serveBench(ctx, ln, &log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveBench: %v", err)
		}
	})
	return ln.Addr().String(), &log
}

// waitFor waits up to 5 s for sub in log.
func waitFor(t *testing.T, log *syncBuf, sub string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), sub); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%q not logged:\n%s", sub, log.String())
		}
	}
}

func testConfig(target string) benchConfig {
	return benchConfig{target: target, size: 1024, count: 50, warmup: 5, bytes: 3<<20 + 7,
		interval: 5 * time.Millisecond, duration: 5 * time.Second, timeout: 5 * time.Second}
}

// result runs modes and returns the parsed result line of each.
func result(t *testing.T, modes string, c benchConfig) []map[string]string {
	t.Helper()
	var out syncBuf
	if err := runBench(context.Background(), &out, modes, c); err != nil {
		t.Fatalf("runBench %s: %v\n%s", modes, err, out.String())
	}
	var res []map[string]string
	for _, l := range strings.Split(out.String(), "\n") {
		if kv, ok := parseBenchLine(l); ok {
			res = append(res, kv)
		}
	}
	if len(res) != len(strings.Split(modes, ",")) {
		t.Fatalf("%d result lines for %s:\n%s", len(res), modes, out.String())
	}
	return res
}

func num(t *testing.T, kv map[string]string, k string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(kv[k], 64)
	if err != nil {
		t.Fatalf("field %s of %v: %v", k, kv, err)
	}
	return v
}

// TestBenchModes: rr, connect and both bulk directions each print one
// parseable line with ordered percentiles, the count asked for and the
// client's own address as peer.
func TestBenchModes(t *testing.T) {
	addr, log := benchServer(t)
	res := result(t, "rr,connect,bulk,bulk-down", testConfig(addr))
	for i, mode := range []string{"rr", "connect", "bulk", "bulk"} {
		kv := res[i]
		if kv["mode"] != mode || kv["target"] != addr || !strings.HasPrefix(kv["peer"], "127.0.0.1:") {
			t.Errorf("line %d: %v", i, kv)
		}
	}
	for _, kv := range res[:2] {
		if num(t, kv, "n") != 50 || num(t, kv, "size") != 1024 {
			t.Errorf("%s: n or size wrong: %v", kv["mode"], kv)
		}
		p50, p90, p99 := num(t, kv, "p50_us"), num(t, kv, "p90_us"), num(t, kv, "p99_us")
		if !(num(t, kv, "min_us") > 0 && p50 <= p90 && p90 <= p99 && p99 <= num(t, kv, "max_us")) {
			t.Errorf("%s: percentiles out of order: %v", kv["mode"], kv)
		}
	}
	for i, dir := range []string{"up", "down"} {
		kv := res[2+i]
		if kv["dir"] != dir || num(t, kv, "n") != 50 || num(t, kv, "bytes") != 3<<20+7 {
			t.Errorf("bulk %s: %v", dir, kv)
		}
		if lo, mid, hi := num(t, kv, "MBps_min"), num(t, kv, "MBps_median"), num(t, kv, "MBps_max"); !(lo > 0 && lo <= mid && mid <= hi) {
			t.Errorf("bulk %s rates: %v", dir, kv)
		}
	}
	// connect opened one connection per exchange: 55 distinct client ports
	// would be hard to see from here; the rr line's peer differs from the
	// connect line's (new connections).
	if res[0]["peer"] == res[1]["peer"] {
		t.Errorf("rr and connect on the same connection: %v %v", res[0], res[1])
	}
	if l := log.String(); l != "" {
		t.Errorf("server logged on good connections: %q", l)
	}
}

// TestBenchDefaultCounts: -n 0 means each mode's default.
func TestBenchDefaultCounts(t *testing.T) {
	addr, _ := benchServer(t)
	c := testConfig(addr)
	c.count, c.size, c.bytes = 0, 1, 1<<20
	res := result(t, "rr,bulk", c)
	if num(t, res[0], "n") != 5000 || num(t, res[1], "n") != 3 {
		t.Errorf("default counts: %v %v", res[0], res[1])
	}
}

// TestBenchServerRejectsBadHeaders: a bad header closes the connection and
// is logged with the peer.
func TestBenchServerRejectsBadHeaders(t *testing.T) {
	addr, log := benchServer(t)
	for _, h := range []string{"rr", "rr x", "rr 0", "rr 2000000", "sink -5", "fly 3", "sink 1 2"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(conn, "%s\n", h)
		b, err := io.ReadAll(conn)
		conn.Close()
		if err != nil || len(b) != 0 {
			t.Errorf("header %q: answer %q, %v; want the connection closed", h, b, err)
		}
	}
	waitFor(t, log, "fly")
	if n := strings.Count(log.String(), "bench-server peer=127.0.0.1:"); n < 7 {
		t.Errorf("%d bad headers logged, want 7:\n%s", n, log.String())
	}
}

// TestBenchSinkCountsBytes: the server says done only after the whole
// transfer, and a short transfer is an error on its side.
func TestBenchSinkCountsBytes(t *testing.T) {
	addr, log := benchServer(t)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := handshake(conn, r, "sink 10"); err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("12345"))
	conn.(*net.TCPConn).CloseWrite()
	if b, _ := io.ReadAll(r); len(b) != 0 {
		t.Errorf("done after 5 of 10 bytes: %q", b)
	}
	waitFor(t, log, "sink: 5 of 10 bytes")
}

// TestBenchWatch: the first answer is printed with its time; the watch
// stops once the wanted peer host is seen, and fails if it never is.
func TestBenchWatch(t *testing.T) {
	addr, _ := benchServer(t)
	c := testConfig(addr)
	c.until = "127.0.0.1"
	var out syncBuf
	before := time.Now().UnixMilli()
	if err := runBench(context.Background(), &out, "watch", c); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "watch at=") || !strings.Contains(lines[0], " peer=127.0.0.1:") {
		t.Fatalf("output %q", out.String())
	}
	at, _ := strconv.ParseInt(strings.Fields(lines[0])[1][len("at="):], 10, 64)
	if at < before || at > time.Now().UnixMilli() {
		t.Errorf("at=%d not the time of the answer", at)
	}
	kv, ok := parseBenchLine(lines[1])
	if !ok || kv["n"] == "0" || kv["ok"] != kv["n"] || kv["fail"] != "0" || kv["first_peer_host"] != "127.0.0.1" {
		t.Errorf("result %q", lines[1])
	}

	// A peer that never comes: an error after the duration, with the
	// attempts it made.
	c.until, c.duration = "10.9.9.9", 60*time.Millisecond
	out = syncBuf{}
	err := runBench(context.Background(), &out, "watch", c)
	if err == nil || !strings.Contains(err.Error(), "10.9.9.9 not seen") || strings.Count(out.String(), "watch at=") != 1 {
		t.Errorf("watch for a missing peer: %v\n%s", err, out.String())
	}
	// It kept connecting, one connection per 5 ms interval, for 60 ms.
	if err == nil {
		t.FailNow()
	}
	if _, rest, _ := strings.Cut(err.Error(), " n="); rest == "" {
		t.Errorf("no attempt count in %v", err)
	} else if n, _ := strconv.Atoi(strings.Fields(rest)[0]); n < 5 {
		t.Errorf("%d attempts in 60 ms at a 5 ms interval: %v", n, err)
	}

	// No server: each attempt is a fail line.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	c.target = ln.Addr().String()
	ln.Close()
	c.until, c.duration = "", 40*time.Millisecond
	out = syncBuf{}
	if err := runBench(context.Background(), &out, "watch", c); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "fail=") || !strings.Contains(out.String(), " ok=0 ") {
		t.Errorf("watch without a server: %q", out.String())
	}
}

func TestBenchUnknownMode(t *testing.T) {
	var out syncBuf
	err := runBench(context.Background(), &out, "fast", testConfig("127.0.0.1:1"))
	if err == nil || !strings.Contains(out.String(), "bench mode=fast error=") {
		t.Errorf("unknown mode: %v %q", err, out.String())
	}
	if err := runBench(context.Background(), &out, "rr", benchConfig{}); err == nil {
		t.Error("no target accepted")
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {90, 9}, {99, 10}, {100, 10}, {0, 1}} {
		if got := percentile(v, c.p); got != c.want {
			t.Errorf("percentile %v = %v, want %v", c.p, got, c.want)
		}
	}
}

// TestBenchWatchHangingAttempt: a connection that gets no answer does not
// hold the next ones back; it is reported as a failure once its timeout
// passes.
func TestBenchWatchHangingAttempt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for i := 0; ; i++ {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if i == 0 {
				defer conn.Close() // held, never answered
				continue
			}
			go func() { defer conn.Close(); _ = benchConn(conn) }()
		}
	}()
	c := testConfig(ln.Addr().String())
	c.until, c.timeout = "127.0.0.1", 400*time.Millisecond
	var out syncBuf
	t0 := time.Now()
	if err := runBench(context.Background(), &out, "watch", c); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], " peer=127.0.0.1:") || !strings.Contains(lines[1], " fail=") {
		t.Fatalf("want an answer, then the hanging attempt's failure, then the result:\n%s", out.String())
	}
	kv, _ := parseBenchLine(lines[2])
	if kv["fail"] != "1" || kv["ok"] == "0" {
		t.Errorf("result %q", lines[2])
	}
	// The answer came from an attempt started within a few intervals, long
	// before the hanging one timed out.
	at := func(l string) int64 {
		v, _ := strconv.ParseInt(strings.TrimPrefix(strings.Fields(l)[1], "at="), 10, 64)
		return v
	}
	if d := at(lines[0]) - t0.UnixMilli(); d > 200 {
		t.Errorf("first answer from an attempt started %d ms in: held back by the hanging one", d)
	}
	if at(lines[1]) > at(lines[0]) {
		t.Errorf("the failed attempt started after the answered one:\n%s", out.String())
	}
}

// A client told to stop (SIGTERM cancels its context) cuts its attempts
// under way short; they were not refused and must not be reported as
// failures (the lifecycle suite counted one such attempt as refused).
func TestBenchWatchStopIsNotAFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var held []net.Conn
	go func() { // accepts and never answers
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	c := testConfig(ln.Addr().String())
	c.interval, c.duration = 10*time.Millisecond, time.Minute
	ctx, cancel := context.WithCancel(context.Background()) // as SIGTERM does
	defer cancel()
	time.AfterFunc(80*time.Millisecond, cancel)
	var out syncBuf
	if err := runBench(ctx, &out, "watch", c); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "fail=\"") || !strings.Contains(out.String(), " fail=0 ") {
		t.Errorf("attempts cut short by the stop reported as failures:\n%s", out.String())
	}
	if strings.Contains(out.String(), " aborted=0 ") || !strings.Contains(out.String(), " aborted=") {
		t.Errorf("no aborted attempts counted:\n%s", out.String())
	}
}

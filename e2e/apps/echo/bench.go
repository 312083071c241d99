package main

// Benchmark modes of the echo app: a server side on its own port
// (server -bench-listen) and client modes (client -bench ...) that print one
// parseable result line each:
//
//	bench mode=<m> key=value ... start_ms=<unix ms> end_ms=<unix ms>
//
// The bench protocol: the client opens a connection and sends one header
// line; the server answers "ok peer=<client address as it sees it>\n" at
// once and then, per header:
//
//	rr <size>      echoes every <size>-byte message back, until EOF;
//	sink <bytes>   reads <bytes> bytes, then writes "done <bytes>\n";
//	source <bytes> writes <bytes> bytes, then closes.
//
// Nothing is logged per message, so the server's own logging does not weigh
// on the figures. The peer address in the answer tells a plaintext
// connection (the client pod's own address) from one that ambit carried
// (ambit's inbound dial from the destination pod's own address).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// benchBuf is the read and write size of bulk transfers.
const benchBuf = 128 << 10

// bulkTimeout bounds one bulk transfer.
const bulkTimeout = 2 * time.Minute

// maxRRSize and maxBulkSize bound an rr message and a bulk transfer a
// server accepts.
const (
	maxRRSize   = 1 << 20
	maxBulkSize = 64 << 30
)

// serveBench answers bench-protocol connections on ln until ctx ends; bad
// headers are logged to log and the connection closed.
func serveBench(ctx context.Context, ln net.Listener, log io.Writer) error {
	var logMu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			if err := benchConn(conn); err != nil && err != io.EOF { // EOF: closed between messages
				logMu.Lock()
				fmt.Fprintf(log, "bench-server peer=%s error=%q\n", conn.RemoteAddr(), err.Error())
				logMu.Unlock()
			}
		}()
	}
}

// benchConn serves one bench-protocol connection.
func benchConn(conn net.Conn) error {
	r := bufio.NewReaderSize(conn, benchBuf)
	header, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	f := strings.Fields(header)
	if len(f) != 2 {
		return fmt.Errorf("bad header %q: want \"rr|sink|source <n>\"", strings.TrimSpace(header))
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n < 1 {
		return fmt.Errorf("bad header %q: size must be a positive integer", strings.TrimSpace(header))
	}
	if (f[0] == "rr" && n > maxRRSize) || n > maxBulkSize {
		return fmt.Errorf("bad header %q: size too large", strings.TrimSpace(header))
	}
	switch f[0] {
	case "rr", "sink", "source":
	default:
		return fmt.Errorf("bad header %q: unknown mode %q", strings.TrimSpace(header), f[0])
	}
	if _, err := fmt.Fprintf(conn, "ok peer=%s\n", conn.RemoteAddr()); err != nil {
		return err
	}
	switch f[0] {
	case "rr":
		msg := make([]byte, n)
		for {
			if _, err := io.ReadFull(r, msg); err != nil {
				return err
			}
			if _, err := conn.Write(msg); err != nil {
				return err
			}
		}
	case "sink":
		if got, err := io.CopyN(io.Discard, r, n); err != nil {
			return fmt.Errorf("sink: %d of %d bytes: %w", got, n, err)
		}
		_, err := fmt.Fprintf(conn, "done %d\n", n)
		return err
	default: // source
		_, err := io.CopyBuffer(conn, io.LimitReader(zeros{}, n), make([]byte, benchBuf))
		return err
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// benchConfig is what the client's bench modes take.
type benchConfig struct {
	target   string
	size     int           // rr and connect message size
	count    int           // rr exchanges, connect connections, bulk transfers (0: the mode's default)
	warmup   int           // rr exchanges / connections not counted
	bytes    int64         // bulk transfer size
	interval time.Duration // watch: pause between connections
	duration time.Duration // watch: give up after this long
	until    string        // watch: stop once the server sees this peer host
	timeout  time.Duration // per connection (rr, bulk: the whole run of one connection)
}

// benchDialer dials the target with the configured timeout.
func (c benchConfig) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", c.target)
}

// open dials and sends header, returning the connection, a reader on it and
// the peer address the server saw.
func (c benchConfig) open(ctx context.Context, header string) (net.Conn, *bufio.Reader, string, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	_ = conn.SetDeadline(time.Now().Add(c.timeout))
	// The handshake ends early when ctx does (the client was told to stop).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	r := bufio.NewReaderSize(conn, benchBuf)
	peer, err := handshake(conn, r, header)
	if !stop() && ctx.Err() != nil {
		conn.Close()
		return nil, nil, "", fmt.Errorf("handshake: %w", ctx.Err())
	}
	if err != nil {
		conn.Close()
		return nil, nil, "", err
	}
	_ = conn.SetDeadline(time.Now().Add(c.timeout))
	return conn, r, peer, nil
}

// handshake sends the header line and reads the server's "ok peer=" line.
func handshake(w io.Writer, r *bufio.Reader, header string) (string, error) {
	if _, err := io.WriteString(w, header+"\n"); err != nil {
		return "", err
	}
	return readOK(r)
}

func readOK(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the server's ok line: %w", err)
	}
	peer, ok := strings.CutPrefix(strings.TrimSpace(line), "ok peer=")
	if !ok {
		return "", fmt.Errorf("server answered %q, want \"ok peer=...\"", strings.TrimSpace(line))
	}
	return peer, nil
}

// defaultCount is each mode's count when -n is not given: rr exchanges,
// connect connections, bulk transfers.
var defaultCount = map[string]int{"rr": 5000, "connect": 1000, "bulk": 3, "bulk-up": 3, "bulk-down": 3}

// runBench runs the named modes (comma separated) in order, writing one
// result line per mode to w (and, for watch, a line per change).
func runBench(ctx context.Context, w io.Writer, modes string, c benchConfig) error {
	if c.target == "" {
		return errors.New("client -bench: -target is required")
	}
	for _, m := range strings.Split(modes, ",") {
		var line string
		var err error
		mc := c
		start := time.Now()
		if mc.count <= 0 {
			mc.count = defaultCount[m]
		}
		switch m {
		case "rr":
			line, err = benchRR(ctx, mc)
		case "connect":
			line, err = benchConnect(ctx, mc)
		case "bulk", "bulk-up":
			line, err = benchBulk(ctx, mc, "sink")
		case "bulk-down":
			line, err = benchBulk(ctx, mc, "source")
		case "watch":
			line, err = benchWatch(ctx, w, mc)
		default:
			err = fmt.Errorf("unknown bench mode %q (want rr, connect, bulk, bulk-down or watch)", m)
		}
		if err != nil {
			fmt.Fprintf(w, "bench mode=%s error=%q\n", m, err.Error())
			return fmt.Errorf("bench %s: %w", m, err)
		}
		if m != "watch" {
			// When the mode ran (unix ms), so that a harness can charge the
			// resources it samples meanwhile to this mode.
			line += fmt.Sprintf(" start_ms=%d end_ms=%d", start.UnixMilli(), time.Now().UnixMilli())
		}
		fmt.Fprintln(w, line)
	}
	return nil
}

// benchRR exchanges size-byte messages on one connection: warmup, then count
// timed round trips.
func benchRR(ctx context.Context, c benchConfig) (string, error) {
	conn, r, peer, err := c.open(ctx, fmt.Sprintf("rr %d", c.size))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Time{})
	msg := make([]byte, c.size)
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	back := make([]byte, c.size)
	lat := make([]time.Duration, 0, c.count)
	for i := 0; i < c.warmup+c.count; i++ {
		t0 := time.Now()
		if _, err := conn.Write(msg); err != nil {
			return "", fmt.Errorf("exchange %d: %w", i, err)
		}
		if _, err := io.ReadFull(r, back); err != nil {
			return "", fmt.Errorf("exchange %d: %w", i, err)
		}
		if i >= c.warmup {
			lat = append(lat, time.Since(t0))
		}
	}
	if string(back) != string(msg) {
		return "", errors.New("echoed message differs from the one sent")
	}
	return fmt.Sprintf("bench mode=rr target=%s peer=%s size=%d %s", c.target, peer, c.size, latencyFields(lat)), nil
}

// benchConnect opens a new connection per exchange: dial, header, one
// size-byte message and its echo, close; the whole is timed.
func benchConnect(ctx context.Context, c benchConfig) (string, error) {
	msg := make([]byte, c.size)
	for i := range msg {
		msg[i] = 'A' + byte(i%26)
	}
	req := append([]byte(fmt.Sprintf("rr %d\n", c.size)), msg...)
	back := make([]byte, c.size)
	lat := make([]time.Duration, 0, c.count)
	var peer string
	for i := 0; i < c.warmup+c.count; i++ {
		t0 := time.Now()
		conn, err := c.dial(ctx)
		if err != nil {
			return "", fmt.Errorf("connection %d: %w", i, err)
		}
		_ = conn.SetDeadline(time.Now().Add(c.timeout))
		r := bufio.NewReader(conn)
		if _, err = conn.Write(req); err == nil {
			if peer, err = readOK(r); err == nil {
				_, err = io.ReadFull(r, back)
			}
		}
		conn.Close()
		if err != nil {
			return "", fmt.Errorf("connection %d: %w", i, err)
		}
		if i >= c.warmup {
			lat = append(lat, time.Since(t0))
		}
	}
	return fmt.Sprintf("bench mode=connect target=%s peer=%s size=%d %s", c.target, peer, c.size, latencyFields(lat)), nil
}

// benchBulk moves c.bytes over one new connection, count times: "sink"
// uploads (timed from the first byte written to the server's "done"),
// "source" downloads (timed from the ok line to the last byte read).
func benchBulk(ctx context.Context, c benchConfig, kind string) (string, error) {
	var rates []float64
	var peer string
	buf := make([]byte, benchBuf)
	for i := 0; i < c.count; i++ {
		conn, r, p, err := c.open(ctx, fmt.Sprintf("%s %d", kind, c.bytes))
		if err != nil {
			return "", fmt.Errorf("transfer %d: %w", i, err)
		}
		peer = p
		_ = conn.SetDeadline(time.Now().Add(bulkTimeout))
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		t0 := time.Now()
		if kind == "sink" {
			if _, err = io.CopyBuffer(conn, io.LimitReader(zeros{}, c.bytes), buf); err == nil {
				var line string
				line, err = r.ReadString('\n')
				if err == nil && strings.TrimSpace(line) != fmt.Sprintf("done %d", c.bytes) {
					err = fmt.Errorf("server answered %q", strings.TrimSpace(line))
				}
			}
		} else {
			var got int64
			got, err = io.CopyBuffer(io.Discard, io.LimitReader(r, c.bytes), buf)
			if err == nil && got != c.bytes {
				err = fmt.Errorf("received %d of %d bytes", got, c.bytes)
			}
		}
		el := time.Since(t0)
		stop()
		conn.Close()
		if err != nil {
			return "", fmt.Errorf("transfer %d: %w", i, err)
		}
		rates = append(rates, float64(c.bytes)/el.Seconds()/1e6)
	}
	slices.Sort(rates)
	dir := "up"
	if kind == "source" {
		dir = "down"
	}
	return fmt.Sprintf("bench mode=bulk dir=%s target=%s peer=%s bytes=%d n=%d MBps_median=%.1f MBps_min=%.1f MBps_max=%.1f",
		dir, c.target, peer, c.bytes, len(rates), median(rates), rates[0], rates[len(rates)-1]), nil
}

// benchWatch starts a new connection every interval, each on its own (a
// connection that hangs does not hold the next ones back), and prints
//
//	watch at=<start, unix ms> ms=<duration> peer=<addr>   (an answer)
//	watch at=<start, unix ms> ms=<duration> fail=<error>  (a failed attempt)
//
// for the first answer, every answer from another peer host than the first
// one's, and every failure. Attempts cut short because ctx ended (the
// client was told to stop) are counted as aborted, not failed. Once the server sees c.until as peer host it
// starts no more connections and waits for those under way; it also stops
// after c.duration or when ctx ends.
func benchWatch(ctx context.Context, w io.Writer, c benchConfig) (string, error) {
	type outcome struct {
		start time.Time
		took  time.Duration
		peer  string
		err   error
	}
	results := make(chan outcome)
	attempt := func(start time.Time) {
		conn, _, peer, err := c.open(ctx, "rr 1")
		if err == nil {
			conn.Close()
		}
		results <- outcome{start, time.Since(start), peer, err}
	}
	deadline := time.NewTimer(c.duration)
	defer deadline.Stop()
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	first, reached, stopped := "", false, false
	n, ok, fail, aborted, inflight := 1, 0, 0, 0, 1
	go attempt(time.Now())
	for inflight > 0 || !stopped {
		select {
		case <-ctx.Done():
			stopped = true
		case <-deadline.C:
			stopped = true
		case t := <-tick.C:
			if !stopped {
				n++
				inflight++
				go attempt(t)
			}
		case o := <-results:
			inflight--
			at, ms := o.start.UnixMilli(), float64(o.took.Microseconds())/1000
			if o.err != nil && ctx.Err() != nil && (errors.Is(o.err, context.Canceled) || errors.Is(o.err, context.DeadlineExceeded)) {
				// Cut short by this client's own stop (SIGTERM):
				// nothing was refused.
				aborted++
				continue
			}
			if o.err != nil {
				fail++
				fmt.Fprintf(w, "watch at=%d ms=%.1f fail=%q\n", at, ms, o.err.Error())
				continue
			}
			ok++
			host, _, herr := net.SplitHostPort(o.peer)
			if herr != nil {
				host = o.peer
			}
			if first == "" || host != first {
				fmt.Fprintf(w, "watch at=%d ms=%.1f peer=%s\n", at, ms, o.peer)
			}
			if first == "" {
				first = host
			}
			if c.until != "" && host == c.until {
				reached, stopped = true, true
			}
		}
	}
	line := fmt.Sprintf("bench mode=watch target=%s n=%d ok=%d fail=%d aborted=%d first_peer_host=%s", c.target, n, ok, fail, aborted, first)
	if c.until != "" && !reached {
		return "", fmt.Errorf("peer host %s not seen (%s)", c.until, strings.TrimPrefix(line, "bench mode=watch "))
	}
	return line, nil
}

// latencyFields formats n, percentiles and mean of lat in microseconds.
func latencyFields(lat []time.Duration) string {
	us := make([]float64, len(lat))
	var sum float64
	for i, d := range lat {
		us[i] = float64(d) / float64(time.Microsecond)
		sum += us[i]
	}
	slices.Sort(us)
	if len(us) == 0 {
		return "n=0"
	}
	return fmt.Sprintf("n=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f mean_us=%.1f min_us=%.1f max_us=%.1f",
		len(us), percentile(us, 50), percentile(us, 90), percentile(us, 99), sum/float64(len(us)), us[0], us[len(us)-1])
}

// percentile is the nearest-rank percentile p of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func median(sorted []float64) float64 { return percentile(sorted, 50) }

// parseBenchLine returns the key=value fields of a "bench mode=..." line.
func parseBenchLine(line string) (map[string]string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "bench ")
	if !ok {
		return nil, false
	}
	kv := map[string]string{}
	for _, f := range strings.Fields(rest) {
		if k, v, ok := strings.Cut(f, "="); ok {
			kv[k] = v
		}
	}
	return kv, kv["mode"] != ""
}

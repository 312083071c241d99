package tunnelbench

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Workloads sets the size of each measurement. The zero value is not
// useful; start from DefaultWorkloads.
type Workloads struct {
	// ThroughputTime is how long each bulk transfer runs.
	ThroughputTime time.Duration
	// RTTSamples is the number of 1 KiB request/response round trips timed
	// on one persistent connection (after RTTSamples/10 untimed ones).
	RTTSamples int
	// ConnectTime is how long ConnectWorkers open, use and close
	// connections as fast as they can.
	ConnectTime    time.Duration
	ConnectWorkers int
	// IdleConns are the connection counts at which idle memory is measured.
	// A count that would need more file descriptors than the process may
	// open is skipped and reported as not measured (see FeasibleIdleConns).
	IdleConns []int
}

// DefaultWorkloads are the sizes `make bench` uses.
var DefaultWorkloads = Workloads{
	ThroughputTime: 3 * time.Second,
	RTTSamples:     5000,
	ConnectTime:    3 * time.Second,
	ConnectWorkers: 4,
	IdleConns:      []int{1000, 3000, 10000},
}

const chunk = 256 << 10

// throughput runs streams concurrent bulk transfers app->backend for d and
// returns Gbit/s received by the backend and the process CPU seconds per GB.
func throughput(ctx context.Context, p Path, b *backend, streams int, d time.Duration) (gbps, cpuPerGB float64, err error) {
	conns := make([]net.Conn, streams)
	for i := range conns {
		c, err := p.Dial(ctx)
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		if _, err := c.Write([]byte{modeSink}); err != nil {
			return 0, 0, err
		}
		conns[i] = c
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for !stop.Load() {
				if _, err := c.Write(buf); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// Warm up until every stream has moved data (windows open, buffers
	// allocated), then measure.
	rxStart := b.received.Load()
	waitFor(func() bool { return b.received.Load()-rxStart >= int64(streams*chunk) }, 10*time.Second)
	time.Sleep(d / 10)
	start, cpu0, rx0 := time.Now(), cpuSeconds(), b.received.Load()
	time.Sleep(d)
	// On a loaded machine (a -race test run beside others) a short block can
	// pass without a byte arriving (stalls of 20-240 ms were seen under
	// TestRunPairedSmall): measure on until some do, within a bound.
	waitFor(func() bool { return b.received.Load() > rx0 }, 10*time.Second)
	elapsed, cpu1, rx1 := time.Since(start), cpuSeconds(), b.received.Load()
	stop.Store(true)
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	close(errs)
	moved := float64(rx1 - rx0)
	if moved == 0 {
		if err := <-errs; err != nil {
			return 0, 0, fmt.Errorf("no bytes moved: %w", err)
		}
		return 0, 0, fmt.Errorf("no bytes moved")
	}
	return moved * 8 / elapsed.Seconds() / 1e9, (cpu1 - cpu0) / (moved / 1e9), nil
}

// rtt times 1 KiB request/response exchanges on one persistent connection
// and returns the p50 and p99 in microseconds.
func rtt(ctx context.Context, p Path, samples int) (p50, p99 float64, err error) {
	c, err := p.Dial(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{modeEcho}); err != nil {
		return 0, 0, err
	}
	req, resp := make([]byte, 1024), make([]byte, 1024)
	times := make([]time.Duration, 0, samples)
	for i := 0; i < samples+samples/10; i++ {
		t0 := time.Now()
		if _, err := c.Write(req); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return 0, 0, err
		}
		if i >= samples/10 {
			times = append(times, time.Since(t0))
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	pct := func(q float64) float64 {
		return float64(times[int(q*float64(len(times)-1))].Nanoseconds()) / 1e3
	}
	return pct(0.50), pct(0.99), nil
}

// connects opens connections for d with workers in parallel: connect, one
// 1 KiB exchange, close. It returns completed connections per second.
func connects(ctx context.Context, p Path, workers int, d time.Duration) (float64, error) {
	var done atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, resp := make([]byte, 1025), make([]byte, 1024)
			msg[0] = modeEcho
			for time.Now().Before(deadline) {
				if err := exchange(ctx, p, msg, resp); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(done.Load()) / d.Seconds(), nil
}

func exchange(ctx context.Context, p Path, msg, resp []byte) error {
	c, err := p.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err = io.ReadFull(c, resp)
	return err
}

// idleMemory opens n connections through p, waits until the backend holds
// all of them, and returns the growth of Go heap and stack in use per
// connection, in KiB, for the whole process.
func idleMemory(ctx context.Context, p Path, b *backend, n int) (float64, error) {
	before := inUse()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		waitFor(func() bool { return b.open() == 0 }, 30*time.Second)
	}()
	for range n {
		c, err := p.Dial(ctx)
		if err != nil {
			return 0, fmt.Errorf("after %d connections: %w", len(conns), err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte{modeIdle}); err != nil {
			return 0, err
		}
	}
	if !waitFor(func() bool { return b.open() >= n }, 60*time.Second) {
		return 0, fmt.Errorf("backend holds %d of %d connections", b.open(), n)
	}
	time.Sleep(500 * time.Millisecond) // let every endpoint go idle
	after := inUse()
	return float64(after-before) / float64(n) / 1024, nil
}

func (b *backend) open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

func waitFor(cond func() bool, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// inUse is the Go heap and goroutine stack memory in use after a GC.
func inUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// cpuSeconds is the user+system CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// fdsPerIdleConn is the most descriptors one idle connection holds in this
// process on any path: the mTLS path has the app's socket, the client
// splice's accepted and TLS sockets, the server splice's accepted socket and
// its dial to the backend, and the backend's accepted socket.
const fdsPerIdleConn = 6

// FeasibleIdleConns splits counts into those the open-file limit allows on
// every path (with 10% to spare) and those it does not.
func FeasibleIdleConns(counts []int) (ok, skipped []int) {
	var l syscall.Rlimit
	limit := uint64(1 << 62)
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil {
		limit = l.Cur
	}
	for _, n := range counts {
		if uint64(n*fdsPerIdleConn) <= limit/10*9 {
			ok = append(ok, n)
		} else {
			skipped = append(skipped, n)
		}
	}
	return ok, skipped
}

package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The benchmarks compare HBONE (Client stream -> Server -> app) with the
// floor of any TLS tunnel: a tls.Conn whose server side io.Copy-splices to
// the same app ("mtls"). Both use the same certificates and TLS profile.
//
//	go test -run '^$' -bench . -benchtime 2s ./tunnel

// sinkApp reads to EOF, then writes back how many bytes it got and closes.
func sinkApp(c net.Conn) {
	defer c.Close()
	n, _ := io.Copy(io.Discard, c)
	fmt.Fprintf(c, "%d", n)
}

// mtlsSplice is the baseline endpoint: TLS server that splices each
// connection to the app with io.Copy both ways.
type mtlsSplice struct {
	ln   net.Listener
	app  netip.AddrPort
	wg   sync.WaitGroup
	conf *tls.Config
}

func newMTLSSplice(tb testing.TB, e *env) *mtlsSplice {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	m := &mtlsSplice{ln: ln, app: e.app, conf: serverTLS(e.srvSVIDs, e.bundles, dstID, Settings{})}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				tc := tls.Server(c, m.conf)
				defer tc.Close()
				up, err := net.Dial("tcp", m.app.String())
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() {
					_, _ = io.Copy(up, tc)
					_ = up.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				_, _ = io.Copy(tc, up)
				_ = tc.CloseWrite()
				<-done
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close(); m.wg.Wait() })
	return m
}

func (m *mtlsSplice) dialErr(e *env) (*tls.Conn, error) {
	c, err := net.Dial("tcp", m.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, clientTLS(e.cliSVIDs, e.bundles, srcID, []spiffeid.ID{dstID}, Settings{}))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// front is the client endpoint of a benchmark path: a loopback listener
// whose connections are spliced into a tunnel, as the node daemon does
// with a captured outbound connection.
func front(tb testing.TB, open func() (net.Conn, error), splice func(app, tun net.Conn)) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				t, err := open()
				if err != nil {
					c.Close()
					return
				}
				splice(c, t)
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// copySplice is the baseline splice: io.Copy each way, CloseWrite on EOF.
func copySplice(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(b, a)
		_ = b.(halfCloser).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(a, b)
	_ = a.(halfCloser).CloseWrite()
	<-done
	a.Close()
	b.Close()
}

func dialTCP(tb testing.TB, ap netip.AddrPort) halfCloser {
	c, err := net.Dial("tcp", ap.String())
	if err != nil {
		tb.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// benchPaths runs fn over the two paths, both app -> client endpoint ->
// tunnel -> server endpoint -> app: "mtls" (a TLS connection per app
// connection, io.Copy splices) and "hbone" (pooled CONNECT streams).
func benchPaths(b *testing.B, o envOpt, fn func(b *testing.B, dial func() halfCloser)) {
	if o.settings == (Settings{}) {
		o.settings = tuneSettings()
	}
	b.Run("mtls", func(b *testing.B) {
		e := newEnv(b, o)
		m := newMTLSSplice(b, e)
		ap := front(b, func() (net.Conn, error) { return m.dialErr(e) }, copySplice)
		fn(b, func() halfCloser { return dialTCP(b, ap) })
	})
	b.Run("hbone", func(b *testing.B) {
		e := newEnv(b, o)
		ap := front(b, func() (net.Conn, error) { return e.cli.Dial(context.Background(), e.req()) },
			func(app, tun net.Conn) { _, _, _ = Splice(context.Background(), app, tun, o.settings) })
		fn(b, func() halfCloser { return dialTCP(b, ap) })
	})
}

func BenchmarkThroughput(b *testing.B) {
	for _, streams := range []int{1, 8} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			benchPaths(b, envOpt{app: sinkApp}, func(b *testing.B, dial func() halfCloser) {
				const perOp = 1 << 20
				conns := make([]halfCloser, streams)
				for i := range conns {
					conns[i] = dial()
				}
				buf := make([]byte, 32<<10)
				b.SetBytes(perOp)
				b.ResetTimer()
				var wg sync.WaitGroup
				for _, c := range conns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer c.Close()
						total := int64(b.N) * perOp / int64(streams)
						for sent := int64(0); sent < total; {
							n := min(int64(len(buf)), total-sent)
							if _, err := c.Write(buf[:n]); err != nil {
								b.Error(err)
								return
							}
							sent += n
						}
						_ = c.CloseWrite()
						got, _ := io.ReadAll(c)
						if string(got) != fmt.Sprint(total) {
							b.Errorf("app got %s bytes, sent %d", got, total)
						}
					}()
				}
				wg.Wait()
			})
		})
	}
}

func BenchmarkRTT(b *testing.B) {
	benchPaths(b, envOpt{}, func(b *testing.B, dial func() halfCloser) {
		c := dial()
		defer c.Close()
		msg := make([]byte, 1024)
		got := make([]byte, 1024)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
	})
}

// BenchmarkConnect: connect, one 1 KiB exchange, close. HBONE reuses a warm
// pooled tunnel; the mTLS splice pays a handshake per connection.
func BenchmarkConnect(b *testing.B) {
	benchPaths(b, envOpt{}, func(b *testing.B, dial func() halfCloser) {
		msg := make([]byte, 1024)
		got := make([]byte, 1024)
		warm := dial() // warms the pool
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c := dial()
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
			_ = c.CloseWrite()
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
		warm.Close()
	})
}

// BenchmarkIdleMemory opens 1000 connections (TUNE_CONNS to change),
// moves 1 KiB through each,
// leaves them idle and reports heap+stack per connection, minus what the
// same connections cost over plain TCP (the app side and the test client),
// halved: the figure per tunnel endpoint.
func BenchmarkIdleMemory(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("TUNE_CONNS")); err == nil && v > 0 {
		n = v // e.g. 10000 (needs ulimit -n above 4 sockets per connection)
	}
	measure := func(b *testing.B, dial func() net.Conn) float64 {
		before := memInUse()
		conns := make([]net.Conn, 0, n)
		msg := make([]byte, 1024)
		for i := 0; i < n; i++ {
			c := dial()
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, msg); err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		time.Sleep(100 * time.Millisecond)
		g0 := runtime.NumGoroutine()
		after := memInUse()
		if os.Getenv("TUNE_MEMSPLIT") != "" {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.Logf("goroutines %d stack %d KiB heap %d KiB", g0, ms.StackInuse>>10, ms.HeapInuse>>10)
		}
		for _, c := range conns {
			c.Close()
		}
		return float64(after-before) / float64(n)
	}
	set := tuneSettings()
	for i := 0; i < b.N; i++ {
		e := newEnv(b, envOpt{settings: set})
		direct := measure(b, func() net.Conn { return dialTCP(b, e.app) })
		m := newMTLSSplice(b, e)
		mtls := front(b, func() (net.Conn, error) { return m.dialErr(e) }, copySplice)
		hbone := front(b, func() (net.Conn, error) { return e.cli.Dial(context.Background(), e.req()) },
			func(app, tun net.Conn) { _, _, _ = Splice(context.Background(), app, tun, set) })
		// HBONE first: the mTLS splice leaves a large heap behind.
		hb := measure(b, func() net.Conn { return dialTCP(b, hbone) })
		mt := measure(b, func() net.Conn { return dialTCP(b, mtls) })
		// A path costs the direct connection (app client socket, app socket
		// and goroutine) plus two endpoints, each holding its own socket
		// (accepted from the app / dialed to the app), the tunnel and the
		// splice: (path - direct) / 2 is the daemon memory per connection
		// per endpoint.
		b.ReportMetric(direct/1024, "direct-KiB/conn")
		b.ReportMetric((mt-direct)/2/1024, "mtls-KiB/conn/endpoint")
		b.ReportMetric((hb-direct)/2/1024, "hbone-KiB/conn/endpoint")

	}
}

func memInUse() uint64 {
	var ms runtime.MemStats
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

var _ = context.Background

// BenchmarkRatio alternates short blocks of the mTLS splice and HBONE on
// the same machine state and reports the median HBONE/mTLS ratio of RTT
// p50 and of 1- and 8-stream throughput (and of the CPU time each
// used): on a shared, loaded machine the ratio of
// interleaved blocks is far steadier than absolute figures.
func BenchmarkRatio(b *testing.B) {
	set := tuneSettings()
	paths := func(o envOpt) (mtls, hbone netip.AddrPort) {
		e := newEnv(b, o)
		m := newMTLSSplice(b, e)
		mtls = front(b, func() (net.Conn, error) { return m.dialErr(e) }, copySplice)
		hbone = front(b, func() (net.Conn, error) { return e.cli.Dial(context.Background(), e.req()) },
			func(app, tun net.Conn) { _, _, _ = Splice(context.Background(), app, tun, set) })
		return mtls, hbone
	}
	echoM, echoH := paths(envOpt{settings: set})
	sinkM, sinkH := paths(envOpt{settings: set, app: sinkApp})
	rttBlock := func(c net.Conn) float64 {
		msg, got := make([]byte, 1024), make([]byte, 1024)
		lat := make([]time.Duration, 0, 500)
		for i := 0; i < 500; i++ {
			t0 := time.Now()
			_, _ = c.Write(msg)
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		return float64(lat[len(lat)/2])
	}
	tputBlock := func(c halfCloser) float64 {
		buf := make([]byte, 32<<10)
		const total = 32 << 20
		t0 := time.Now()
		for sent := 0; sent < total; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		_ = c.CloseWrite()
		_, _ = io.ReadAll(c)
		c.Close()
		return total / time.Since(t0).Seconds()
	}
	perStream8 := 8 << 20 // TUNE_T8MB: MiB per stream of the 8-stream block
	if v, err := strconv.Atoi(os.Getenv("TUNE_T8MB")); err == nil && v > 0 {
		perStream8 = v << 20
	}
	tput8Block := func(ap netip.AddrPort) float64 {
		t0 := time.Now()
		var wg sync.WaitGroup
		var bytes float64
		var mu sync.Mutex
		for i := 0; i < 8; i++ {
			c := dialTCP(b, ap)
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 32<<10)
				total := perStream8
				for sent := 0; sent < total; sent += len(buf) {
					if _, err := c.Write(buf); err != nil {
						b.Error(err)
						return
					}
				}
				_ = c.CloseWrite()
				_, _ = io.ReadAll(c)
				c.Close()
				mu.Lock()
				bytes += float64(total)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return bytes / time.Since(t0).Seconds()
	}
	hc, mc := dialTCP(b, echoH), dialTCP(b, echoM)
	defer hc.Close()
	defer mc.Close()
	var rtt, tput, rttCPU, tputCPU, tput8, tput8CPU []float64
	for i := 0; i < b.N; i++ {
		for r := 0; r < 5; r++ {
			c0 := cpuTime()
			h := rttBlock(hc)
			c1 := cpuTime()
			mm := rttBlock(mc)
			c2 := cpuTime()
			rtt = append(rtt, h/mm)
			rttCPU = append(rttCPU, float64(c1-c0)/float64(c2-c1))
			c0 = cpuTime()
			h = tputBlock(dialTCP(b, sinkH))
			c1 = cpuTime()
			mm = tputBlock(dialTCP(b, sinkM))
			c2 = cpuTime()
			tput = append(tput, h/mm)
			tputCPU = append(tputCPU, float64(c1-c0)/float64(c2-c1))
			c0 = cpuTime()
			h = tput8Block(sinkH)
			c1 = cpuTime()
			mm = tput8Block(sinkM)
			c2 = cpuTime()
			tput8 = append(tput8, h/mm)
			tput8CPU = append(tput8CPU, float64(c1-c0)/float64(c2-c1))
		}
	}
	med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	b.ReportMetric(med(rtt), "rtt-p50-ratio")
	b.ReportMetric(med(tput), "tput1-ratio")
	b.ReportMetric(med(rttCPU), "rtt-cpu-ratio")
	b.ReportMetric(med(tputCPU), "tput1-cpu-ratio")
	b.ReportMetric(med(tput8), "tput8-ratio")
	b.ReportMetric(med(tput8CPU), "tput8-cpu-ratio")
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

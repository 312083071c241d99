package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
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

func (m *mtlsSplice) dial(tb testing.TB, e *env) *tls.Conn {
	c, err := net.Dial("tcp", m.ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tc := tls.Client(c, clientTLS(e.cliSVIDs, e.bundles, srcID, []spiffeid.ID{dstID}, Settings{}))
	if err := tc.Handshake(); err != nil {
		tb.Fatal(err)
	}
	return tc
}

type halfCloser interface {
	net.Conn
	CloseWrite() error
}

func benchPaths(b *testing.B, o envOpt, fn func(b *testing.B, dial func() halfCloser)) {
	b.Run("mtls", func(b *testing.B) {
		e := newEnv(b, o)
		m := newMTLSSplice(b, e)
		fn(b, func() halfCloser { return m.dial(b, e) })
	})
	b.Run("hbone", func(b *testing.B) {
		e := newEnv(b, o)
		fn(b, func() halfCloser { return e.dial(b) })
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

// BenchmarkIdleMemory opens 1000 connections, moves 1 KiB through each,
// leaves them idle and reports heap+stack per connection, minus what the
// same connections cost over plain TCP (the app side and the test client),
// halved: the figure per tunnel endpoint.
func BenchmarkIdleMemory(b *testing.B) {
	const n = 1000
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
		after := memInUse()
		for _, c := range conns {
			c.Close()
		}
		return float64(after-before) / n
	}
	for i := 0; i < b.N; i++ {
		e := newEnv(b, envOpt{})
		direct := measure(b, func() net.Conn {
			c, err := net.Dial("tcp", e.app.String())
			if err != nil {
				b.Fatal(err)
			}
			return c
		})
		m := newMTLSSplice(b, e)
		mtls := measure(b, func() net.Conn { return m.dial(b, e) })
		hbone := measure(b, func() net.Conn { return e.dial(b) })
		b.ReportMetric(direct/1024, "direct-KiB/conn")
		b.ReportMetric((mtls-direct)/2/1024, "mtls-KiB/conn/endpoint")
		b.ReportMetric((hbone-direct)/2/1024, "hbone-KiB/conn/endpoint")
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

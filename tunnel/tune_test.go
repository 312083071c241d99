package tunnel

import (
	"io"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkTune runs RTT and 1-stream throughput over HBONE with Settings
// taken from the environment (TUNE_IDLE, TUNE_FRAME, TUNE_COPY): the tool
// used to choose the defaults.
func BenchmarkTune(b *testing.B) {
	s := tuneSettings()
	b.Run("rtt", func(b *testing.B) {
		e := newEnv(b, envOpt{settings: s})
		c := e.dial(b)
		defer c.Close()
		msg, got := make([]byte, 1024), make([]byte, 1024)
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			_, _ = c.Write(msg)
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
	})
	b.Run("tput", func(b *testing.B) {
		e := newEnv(b, envOpt{settings: s, app: sinkApp})
		c := e.dial(b)
		buf := make([]byte, 32<<10)
		b.SetBytes(1 << 20)
		for i := 0; i < b.N*32; i++ {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		_ = c.CloseWrite()
		_, _ = io.ReadAll(c)
		c.Close()
	})
}

// tuneSettings reads Settings overrides from TUNE_* variables.
func tuneSettings() Settings {
	var s Settings
	if v, err := strconv.Atoi(os.Getenv("TUNE_IDLE")); err == nil {
		s.IdleReadSize = v
	}
	if v, err := strconv.Atoi(os.Getenv("TUNE_FRAME")); err == nil {
		s.MaxFrameSize = uint32(v)
	}
	if v, err := strconv.Atoi(os.Getenv("TUNE_COPY")); err == nil {
		s.CopyBufferSize = v
	}
	if v, err := strconv.Atoi(os.Getenv("TUNE_WIN")); err == nil {
		s.StreamWindow = uint32(v)
		s.ConnWindow = uint32(4 * v)
	}
	return s
}

package metrics

import (
	"io"
	"log/slog"
	"testing"

	"github.com/ambit-mesh/ambit/tunnel"
)

// BenchmarkHooks measures the metrics hooks per connection (OnStart and
// OnEnd) for a label set already seen, the common case.
func BenchmarkHooks(b *testing.B) {
	for _, c := range []struct {
		name string
		log  *slog.Logger
	}{
		{"metrics-only", nil},
		{"with-json-access-log", slog.New(slog.NewJSONHandler(io.Discard, nil))},
	} {
		b.Run(c.name, func(b *testing.B) {
			m := newMetrics(b, Config{AccessLog: c.log})
			h := m.TunnelHooks(ReporterDestination)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ci := conn(tunnel.OutcomeOK)
				for pb.Next() {
					h.OnStart(ci)
					h.OnEnd(ci)
				}
			})
		})
	}
}

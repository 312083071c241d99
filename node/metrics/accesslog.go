package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/ambit-mesh/ambit/tunnel"
)

// AccessLogMessage is the message of every access log line.
const AccessLogMessage = "connection"

// accessLog writes the one line of a connection. The attribute names are
// stable (dashboards and e2e tests parse them). Addresses appear here and
// never in metric labels. Untrusted request headers are not logged.
func (m *Metrics) accessLog(k *labelKey, ci *tunnel.ConnInfo) {
	attrs := make([]slog.Attr, 0, 20)
	attrs = append(attrs,
		slog.String("reporter", k.reporter),
		slog.String("direction", k.direction),
		slog.String("source_addr", addrString(ci.SourceAddr.IsValid(), ci.SourceAddr.String())),
		slog.String("destination_addr", addrString(ci.DestAddr.IsValid(), ci.DestAddr.String())),
		slog.String("tunnel_addr", addrString(ci.TunnelAddr.IsValid(), ci.TunnelAddr.String())),
		slog.String("source_workload", k.src.workload),
		slog.String("source_principal", principal(ci.Source)),
		slog.String("source_namespace", k.src.ns),
		slog.String("destination_workload", k.dst.workload),
		slog.String("destination_principal", principal(ci.Destination)),
		slog.String("destination_namespace", k.dst.ns),
		slog.String("destination_service", k.dstService),
		slog.String("connection_security_policy", k.policy),
		slog.Int64("bytes_sent", ci.BytesSent),
		slog.Int64("bytes_received", ci.BytesRecv),
		slog.Time("start", ci.Start),
		slog.Float64("duration_ms", float64(ci.Duration)/float64(time.Millisecond)),
		slog.String("response_flags", k.flags),
	)
	if ci.Reason != "" {
		attrs = append(attrs, slog.String("reason", ci.Reason))
	}
	if ci.Policy != "" {
		attrs = append(attrs, slog.String("policy", ci.Policy))
	}
	if ci.Err != nil {
		attrs = append(attrs, slog.String("error", ci.Err.Error()))
	}
	m.cfg.AccessLog.LogAttrs(context.Background(), slog.LevelInfo, AccessLogMessage, attrs...)
}

func addrString(valid bool, s string) string {
	if !valid {
		return "-"
	}
	return s
}

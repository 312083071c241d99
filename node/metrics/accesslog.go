package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ambit-mesh/ambit/tunnel"
)

// AccessLogMessage is the message of every access log line in the ambit
// format.
const AccessLogMessage = "connection"

// ZtunnelAccessLogMessage is the message of every line in the ztunnel
// format, as ztunnel writes it.
const ZtunnelAccessLogMessage = "connection complete"

// Access log formats (Config.AccessLogFormat).
const (
	AccessLogFormatAmbit   = "ambit"   // source_addr, source_principal, ..., bytes_received, duration_ms
	AccessLogFormatZtunnel = "ztunnel" // src.addr, src.identity, dst.addr, ..., bytes_recv, duration
)

// Access log levels (Config.AccessLogLevel, SetAccessLogLevel).
const (
	AccessLogAll      = "all"      // every connection
	AccessLogFailures = "failures" // connections that did not end normally: failed, refused, denied, revoked, reset
	AccessLogOff      = "off"
)

var accessLevels = []string{AccessLogAll, AccessLogFailures, AccessLogOff}

// AccessLogLevel reports which connections are logged now.
func (m *Metrics) AccessLogLevel() string { return accessLevels[m.accessLevel.Load()] }

// SetAccessLogLevel changes which connections are logged (all, failures
// or off), at once for every connection that ends afterwards.
func (m *Metrics) SetAccessLogLevel(level string) error {
	for i, l := range accessLevels {
		if l == level {
			m.accessLevel.Store(int32(i))
			return nil
		}
	}
	return fmt.Errorf("metrics: access log level %q: want all, failures or off", level)
}

// logged reports whether the connection's end is written at the current
// level.
func (m *Metrics) logged(ci *tunnel.ConnInfo) bool {
	if m.cfg.AccessLog == nil {
		return false
	}
	switch accessLevels[m.accessLevel.Load()] {
	case AccessLogAll:
		return true
	case AccessLogFailures:
		return ci.Outcome != tunnel.OutcomeOK
	}
	return false
}

// accessLog writes the one line of a connection in the configured format.
// The attribute names are stable (dashboards and e2e tests parse them).
// Addresses appear here and never in metric labels. Untrusted request
// headers are not logged.
func (m *Metrics) accessLog(k *labelKey, ci *tunnel.ConnInfo) {
	if m.cfg.AccessLogFormat == AccessLogFormatZtunnel {
		m.ztunnelLog(k, ci)
		return
	}
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
	attrs = appendRefusal(attrs, ci)
	m.cfg.AccessLog.LogAttrs(context.Background(), slog.LevelInfo, AccessLogMessage, attrs...)
}

// ztunnelLog writes ztunnel's field names and values (src/proxy/metrics.rs,
// "connection complete"): dst.addr is the address dialled (the HBONE
// listener for a tunnel) and dst.hbone_addr the CONNECT target; identities
// only for mutual TLS, as spiffe:// URIs; bytes_sent and bytes_recv from
// the reporting workload's side (ztunnel un-flips Istio's metric naming for
// the source reporter); duration as "<n>ms"; ERROR level when the
// connection failed. ambit's response_flags, reason and policy follow.
func (m *Metrics) ztunnelLog(k *labelKey, ci *tunnel.ConnInfo) {
	mtls := k.policy == MutualTLS
	attrs := make([]slog.Attr, 0, 22)
	attrs = append(attrs, slog.String("src.addr", addrString(ci.SourceAddr.IsValid(), ci.SourceAddr.String())))
	attrs = appendKnown(attrs, "src.workload", k.src.workload)
	attrs = appendKnown(attrs, "src.namespace", k.src.ns)
	if mtls {
		attrs = append(attrs, slog.String("src.identity", istioPrincipal(k.src.principal)))
	}
	attrs = appendKnown(attrs, "src.cluster", k.src.cluster)
	if ci.TunnelAddr.IsValid() {
		attrs = append(attrs, slog.String("dst.addr", ci.TunnelAddr.String()))
		if ci.DestAddr.IsValid() {
			attrs = append(attrs, slog.String("dst.hbone_addr", ci.DestAddr.String()))
		}
	} else {
		attrs = append(attrs, slog.String("dst.addr", addrString(ci.DestAddr.IsValid(), ci.DestAddr.String())))
	}
	attrs = appendKnown(attrs, "dst.service", k.dstService)
	attrs = appendKnown(attrs, "dst.workload", k.dst.workload)
	attrs = appendKnown(attrs, "dst.namespace", k.dst.ns)
	if mtls {
		attrs = append(attrs, slog.String("dst.identity", istioPrincipal(k.dst.principal)))
	}
	attrs = appendKnown(attrs, "dst.cluster", k.dst.cluster)
	sent, recv := ci.BytesSent, ci.BytesRecv // the source sent the request bytes
	if k.reporter == ReporterDestination {
		sent, recv = ci.BytesRecv, ci.BytesSent // the destination sent the response bytes
	}
	attrs = append(attrs,
		slog.String("direction", k.direction),
		slog.Int64("bytes_sent", sent),
		slog.Int64("bytes_recv", recv),
		slog.String("duration", strconv.FormatInt(ci.Duration.Milliseconds(), 10)+"ms"),
		slog.String("response_flags", k.flags),
	)
	attrs = appendRefusal(attrs, ci)
	level := slog.LevelInfo
	if ci.Outcome != tunnel.OutcomeOK {
		level = slog.LevelError
	}
	m.cfg.AccessLog.LogAttrs(context.Background(), level, ZtunnelAccessLogMessage, attrs...)
}

// appendKnown adds key=v unless v is unknown (ztunnel leaves such fields
// out).
func appendKnown(attrs []slog.Attr, key, v string) []slog.Attr {
	if v == Unknown || v == "" {
		return attrs
	}
	return append(attrs, slog.String(key, v))
}

// appendRefusal adds ambit's refusal fields: why, which policy, the error.
func appendRefusal(attrs []slog.Attr, ci *tunnel.ConnInfo) []slog.Attr {
	if ci.Reason != "" {
		attrs = append(attrs, slog.String("reason", ci.Reason))
	}
	if ci.Policy != "" {
		attrs = append(attrs, slog.String("policy", ci.Policy))
	}
	if ci.Err != nil {
		attrs = append(attrs, slog.String("error", ci.Err.Error()))
	}
	return attrs
}

func addrString(valid bool, s string) string {
	if !valid {
		return "-"
	}
	return s
}

package metrics

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/tunnel"
)

func TestAccessLogOneJSONLine(t *testing.T) {
	var buf bytes.Buffer
	m := newMetrics(t, Config{AccessLog: slog.New(slog.NewJSONHandler(&buf, nil))})
	h := m.TunnelHooks(ReporterDestination)
	ci := conn(tunnel.OutcomeOK)
	h.OnStart(ci)
	if buf.Len() != 0 {
		t.Fatalf("OnStart logged: %s", buf.String())
	}
	ci.Outcome, ci.Reason, ci.Policy, ci.Err = tunnel.OutcomeDenied, "no ALLOW policy matched", "pay/allow-shop", errors.New("denied")
	h.OnEnd(ci)
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1: %q", len(lines), buf.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	for k, want := range map[string]any{
		"msg": AccessLogMessage, "level": "INFO", "reporter": "destination", "direction": "inbound",
		"source_addr": "10.1.2.3:40000", "destination_addr": "10.4.5.6:8080", "tunnel_addr": "10.4.5.6:15008",
		"source_principal": "cluster.local/ns/shop/sa/frontend", "source_namespace": "shop",
		"destination_principal": "cluster.local/ns/pay/sa/backend", "destination_namespace": "pay",
		"bytes_sent": 100.0, "bytes_received": 2500.0, "duration_ms": 1500.0,
		"response_flags": "DENY", "reason": "no ALLOW policy matched", "policy": "pay/allow-shop", "error": "denied",
		"connection_security_policy": "mutual_tls", "source_workload": "unknown", "destination_workload": "unknown",
	} {
		if got[k] != want {
			t.Errorf("%s = %#v, want %#v", k, got[k], want)
		}
	}
}

func TestAccessLogOffWithoutLogger(t *testing.T) {
	m := newMetrics(t, Config{})
	ci := conn(tunnel.OutcomeOK)
	m.TunnelHooks(ReporterSource).OnEnd(ci) // must not panic without a logger
	if got, _ := value(t, m.Registry(), "ambit_tcp_connections_closed_total", nil); got != 1 {
		t.Fatalf("closed = %v, want 1", got)
	}
}

package metrics

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

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

func TestAccessLogZtunnelFormat(t *testing.T) {
	var buf bytes.Buffer
	m := newMetrics(t, Config{AccessLog: slog.New(slog.NewJSONHandler(&buf, nil)), AccessLogFormat: AccessLogFormatZtunnel,
		Workloads: func(*tunnel.ConnInfo) WorkloadLabels {
			return WorkloadLabels{SourceWorkload: "frontend", DestinationWorkload: "backend",
				DestinationService: "backend.pay.svc.cluster.local", DestinationServiceName: "backend", DestinationServiceNamespace: "pay"}
		}})
	for _, r := range []string{ReporterDestination, ReporterSource} {
		buf.Reset()
		ci := conn(tunnel.OutcomeOK)
		m.TunnelHooks(r).OnEnd(ci)
		var got map[string]any
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatalf("not JSON: %v: %s", err, buf.String())
		}
		// conn(): 100 bytes towards the destination, 2500 back.
		sent, recv := 2500.0, 100.0 // the destination sent the response
		if r == ReporterSource {
			sent, recv = 100, 2500 // the source sent the request
		}
		for k, want := range map[string]any{
			"msg": ZtunnelAccessLogMessage, "level": "INFO",
			"src.addr": "10.1.2.3:40000", "src.workload": "frontend", "src.namespace": "shop",
			"src.identity": "spiffe://cluster.local/ns/shop/sa/frontend", "src.cluster": "Kubernetes",
			"dst.addr": "10.4.5.6:15008", "dst.hbone_addr": "10.4.5.6:8080", "dst.service": "backend.pay.svc.cluster.local",
			"dst.workload": "backend", "dst.namespace": "pay", "dst.identity": "spiffe://cluster.local/ns/pay/sa/backend",
			"direction": "inbound", "bytes_sent": sent, "bytes_recv": recv, "duration": "1500ms", "response_flags": "-",
		} {
			if got[k] != want {
				t.Errorf("%s: %s = %#v, want %#v", r, k, got[k], want)
			}
		}
		for _, k := range []string{"source_addr", "source_principal", "bytes_received"} {
			if _, ok := got[k]; ok {
				t.Errorf("%s: ambit field %s in the ztunnel format", r, k)
			}
		}
	}
	// A refusal: ERROR, no identity for a plaintext peer, ambit's reason and
	// policy kept.
	buf.Reset()
	ci := conn(tunnel.OutcomeDenied)
	ci.Source, ci.TunnelAddr, ci.Reason, ci.Policy = spiffeid.ID{}, netip.AddrPort{}, "STRICT: plaintext refused", "pay/default"
	m.TunnelHooks(ReporterDestination).OnEnd(ci)
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["level"] != "ERROR" || got["dst.addr"] != "10.4.5.6:8080" || got["src.identity"] != nil || got["dst.identity"] != nil ||
		got["reason"] != "STRICT: plaintext refused" || got["policy"] != "pay/default" || got["response_flags"] != "DENY" {
		t.Errorf("refusal line: %s", buf.String())
	}
}

// TestAccessLogLevels: all, failures (anything that did not end normally)
// and off, changed at run time.
func TestAccessLogLevels(t *testing.T) {
	var buf bytes.Buffer
	m := newMetrics(t, Config{AccessLog: slog.New(slog.NewJSONHandler(&buf, nil)), AccessLogLevel: AccessLogFailures})
	h := m.TunnelHooks(ReporterDestination)
	count := func() int { return strings.Count(buf.String(), "\n") }
	end := func(outcome string) { h.OnEnd(conn(outcome)) }
	end(tunnel.OutcomeOK)
	if count() != 0 {
		t.Fatalf("failures level logged a normal end: %s", buf.String())
	}
	for _, o := range []string{tunnel.OutcomeDenied, tunnel.OutcomeReset, tunnel.OutcomeRevoked, tunnel.OutcomeUpstreamRefused} {
		end(o)
	}
	if count() != 4 {
		t.Fatalf("failures level: %d lines, want 4", count())
	}
	if err := m.SetAccessLogLevel("off"); err != nil || m.AccessLogLevel() != "off" {
		t.Fatalf("SetAccessLogLevel(off): %v, level %s", err, m.AccessLogLevel())
	}
	end(tunnel.OutcomeDenied)
	if count() != 4 {
		t.Fatal("off level logged")
	}
	_ = m.SetAccessLogLevel("all")
	end(tunnel.OutcomeOK)
	if count() != 5 {
		t.Fatal("all level did not log a normal end")
	}
	if err := m.SetAccessLogLevel("verbose"); err == nil || m.AccessLogLevel() != "all" {
		t.Errorf("bad level: %v, level now %s", err, m.AccessLogLevel())
	}
	if _, err := New(Config{AccessLogFormat: "envoy"}); err == nil {
		t.Error("New accepted access log format envoy")
	}
}

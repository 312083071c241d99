//go:build linux

package demo

import (
	"strings"
	"testing"
)

func TestShellJoin(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"label", "namespace", "shop", "ambit.dev/mesh=enabled"}, "label namespace shop ambit.dev/mesh=enabled"},
		{[]string{"logs", "x", "|", "it's"}, `logs x '|' 'it'\''s'`},
		{[]string{"run", "--overrides={\"a\":1}", "--", "client"}, `run --overrides='{"a":1}' -- client`},
	} {
		if got := shellJoin(c.args); got != c.want {
			t.Errorf("shellJoin(%q) = %s, want %s", c.args, got, c.want)
		}
	}
	long := shellJoin([]string{"install", "ambit", "charts/ambit", "--set", strings.Repeat("a", 60), "--set", strings.Repeat("b", 60), "--wait"})
	want := "install ambit charts/ambit --set " + strings.Repeat("a", 60) + " \\\n      --set " + strings.Repeat("b", 60) + " --wait"
	if long != want {
		t.Errorf("wrapped:\n%s\nwant:\n%s", long, want)
	}
}

func TestPacketsAndMetrics(t *testing.T) {
	capture := `13:02:05.908696 IP 10.250.1.5.51994 > 10.250.0.4.8080: Flags [P.], length 16: HTTP
E..D..@.?...
..PLAINTEXT-HELLO
13:02:05.908700 IP 10.250.0.4.8080 > 10.250.1.5.51994: Flags [.], length 0
`
	ps := packets(capture)
	if len(ps) != 2 || !strings.Contains(ps[0].payload, "PLAINTEXT-HELLO") || strings.TrimSpace(ps[1].payload) != "" {
		t.Fatalf("packets = %+v", ps)
	}
	if !ps[1].between("10.250.1.5", "10.250.0.4") || ps[1].between("10.250.1.5", "10.250.0.40") {
		t.Error("between")
	}
	text := `# HELP ambit_tcp_connections_opened_total x
ambit_tcp_connections_opened_total{reporter="destination",source_principal="a"} 2
ambit_tcp_connections_opened_total{reporter="source",source_principal="a"} 3
ambit_tcp_connections_opened_total_other{reporter="destination"} 7
`
	lines, sum := metricLines(text, "ambit_tcp_connections_opened_total", map[string]string{"reporter": "destination"})
	if sum != 2 || len(lines) != 1 {
		t.Errorf("metricLines = %v, %v", lines, sum)
	}
	if _, sum := metricLines(text, "ambit_tcp_connections_opened_total", nil); sum != 5 {
		t.Errorf("sum of all = %v", sum)
	}
}

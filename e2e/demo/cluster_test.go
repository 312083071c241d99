//go:build linux

package demo

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// TestCluster runs the cluster demo end to end (root, the built cluster
// binaries) and checks that the narration reports what was observed.
func TestCluster(t *testing.T) {
	cluster.SkipIfUnavailable(t, cluster.Options{})
	t.Setenv("KEEP", "")
	// Long enough to wait for other packages' clusters (one at a time per
	// machine) under `make test`'s 45 minutes; the demo itself takes ~1.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := Cluster(ctx, &out, ClusterOptions{Logger: slog.New(slog.NewTextHandler(logWriter{t}, nil))})
	text := out.String()
	t.Logf("narration:\n%s", text)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ what, re string }{
		{"helm install as typed", `(?m)^\$ helm install ambit charts/ambit -n ambit-system`},
		{"the namespace label", `(?m)^\$ kubectl label namespace shop ambit.dev/mesh=enabled$`},
		{"the plaintext packet with port 8080", `(?m)^    \S+ IP [0-9.]+ > [0-9.]+\.8080: `},
		{"both principals on the server side", `"direction":"inbound",.*"source_principal":"cluster.local/ns/shop/sa/web","destination_principal":"cluster.local/ns/shop/sa/echo","connection_security_policy":"mutual_tls"`},
		{"both principals on the client side", `"direction":"outbound",.*"source_principal":"cluster.local/ns/shop/sa/web","destination_principal":"cluster.local/ns/shop/sa/echo"`},
		{"a capture line on 15008", `(?m)^    \S+ IP [0-9.]+ > [0-9.]+\.15008: `},
		{"nothing else on the wire", `all TCP to/from port 15008 \(HBONE\); 0 on another port`},
		{"the marker absent", `marker "AMBIT-SECRET" found in 0 packets`},
		{"a metrics line", `(?m)^    ambit_tcp_connections_opened_total\{.*destination_principal="cluster.local/ns/shop/sa/echo".*source_principal="cluster.local/ns/shop/sa/web".*\} [1-9]`},
		{"the DENY policy applied", `(?m)^\$ kubectl apply -f - <<EOF\n(.*\n)*? +action: DENY$`},
		{"the live connection closed", `the live connection, answered \d+ times, was closed`},
		{"the new connection refused", `(?m)^refused: no answer\. The server side`},
		{"the DENY in the access log", `"response_flags":"DENY"`},
		{"the ALLOW success", `(?m)^    ok echo-\S+ peer=\S+ local=\S+ got=ALLOWED$`},
		{"another namespace refused under the ALLOW", `"source_principal":"cluster.local/ns/other/sa/default",.*"response_flags":"DENY"`},
		{"torn down", `nothing left behind`},
	} {
		if !regexp.MustCompile(want.re).MatchString(text) {
			t.Errorf("narration lacks %s (%s)", want.what, want.re)
		}
	}
	if strings.Contains(text, "PRIVATE KEY") {
		t.Error("narration leaks key material")
	}
}

// logWriter sends the harness's log lines to t.Log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/node/admin"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/connections"
	"github.com/ambit-mesh/ambit/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// workloadView has the shape the daemon registers as "workloads".
type workloadView struct {
	Namespace      string            `json:"namespace"`
	Name           string            `json:"name"`
	UID            string            `json:"uid"`
	ServiceAccount string            `json:"serviceAccount"`
	IPs            []string          `json:"ips"`
	Labels         map[string]string `json:"labels,omitempty"`
	Enrolled       bool              `json:"enrolled"`
}

var workloads = []workloadView{
	{Namespace: "pay", Name: "backend-7d9f", UID: "u1", ServiceAccount: "backend", IPs: []string{"10.2.0.9", "fd00::9"},
		Labels: map[string]string{"app": "backend"}, Enrolled: true},
	{Namespace: "shop", Name: "frontend-1", UID: "u2", ServiceAccount: "frontend", IPs: []string{"10.2.0.7"}, Enrolled: true},
}

var certs = []identity.CertInfo{
	{ID: "spiffe://cluster.local/ns/pay/sa/backend", State: "ready", Usable: true, Serial: "1f2e",
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(23 * time.Hour), RenewAt: now.Add(11 * time.Hour), Refs: 1, ChainLength: 2},
	{ID: "spiffe://cluster.local/ns/shop/sa/frontend", State: "failing", Failures: 3,
		LastError: "ca: connection refused\n\tretrying", Refs: 1},
}

var policies = []authz.PolicyReport{
	{Kind: "AuthorizationPolicy", Namespace: "pay", Name: "allow-shop", Generation: 2, Accepted: true, Reason: "FullyEnforced"},
	{Kind: "AuthorizationPolicy", Namespace: "pay", Name: "deny-l7", Generation: 1, Accepted: true, Reason: "PartiallyEnforced",
		Message: "L7 fields ignored", Issues: []string{"rule 0: methods dropped", "rule 1: paths dropped"}},
}

var (
	frontendID = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/frontend")
	backendID  = spiffeid.RequireFromString("spiffe://cluster.local/ns/pay/sa/backend")
)

// daemon serves a real admin server on 127.0.0.1:0 with the sections the
// daemon registers and a connection table fed through tunnel hooks.
type daemon struct {
	url string
	tbl *connections.Table
}

func startDaemon(t *testing.T, sections map[string]func() any, withTable bool) *daemon {
	t.Helper()
	dump := admin.NewConfigDump()
	for n, f := range sections {
		dump.Register(n, f)
	}
	d := &daemon{}
	cfg := admin.Config{Level: new(slog.LevelVar), ConfigDump: dump}
	if withTable {
		tbl, err := connections.New(connections.Config{MaxEntries: 2, Now: func() time.Time { return now },
			Workload: func(ci *tunnel.ConnInfo) string {
				if ci.Direction == tunnel.Inbound {
					return "pay/backend-7d9f"
				}
				return "shop/frontend-1"
			}})
		if err != nil {
			t.Fatal(err)
		}
		d.tbl = tbl
		cfg.Connections = tbl.SnapshotAny
		h := tbl.Hooks(tunnel.Hooks{})
		h.OnStart(&tunnel.ConnInfo{Direction: tunnel.Outbound, Source: frontendID, Destination: backendID,
			SourceAddr: netip.MustParseAddrPort("10.2.0.7:51000"), DestAddr: netip.MustParseAddrPort("10.96.0.10:80"),
			TunnelAddr: netip.MustParseAddrPort("10.2.0.9:15008"), Start: now.Add(-5*time.Minute - 12*time.Second)})
		h.OnStart(&tunnel.ConnInfo{Direction: tunnel.Inbound, Source: frontendID, Destination: backendID,
			SourceAddr: netip.MustParseAddrPort("10.2.0.7:40001"), DestAddr: netip.MustParseAddrPort("10.2.0.9:8080"),
			TunnelAddr: netip.MustParseAddrPort("10.2.0.9:15008"), Policy: "pay/allow-shop", Start: now.Add(-42 * time.Second)})
		h.OnStart(&tunnel.ConnInfo{Direction: tunnel.Inbound, Start: now}) // over the cap: dropped
	}
	srv, err := admin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- admin.ServeListener(ctx, ln, srv.Handler(), nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("admin server: %v", err)
		}
	})
	d.url = "http://" + ln.Addr().String()
	return d
}

func fullDaemon(t *testing.T) *daemon {
	return startDaemon(t, map[string]func() any{
		"workloads":    func() any { return workloads },
		"certificates": func() any { return certs },
		"policies":     func() any { return policies },
	}, true)
}

func runCtl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb, func() time.Time { return now })
	return code, out.String(), errb.String()
}

func TestTables(t *testing.T) {
	d := fullDaemon(t)
	for _, tc := range []struct {
		args       []string
		out, err   string
		extraCheck func(t *testing.T, out string)
	}{
		{args: []string{"workloads", "--admin", d.url}, out: `
NAMESPACE  NAME          IPS               SERVICE ACCOUNT  ENROLLED
pay        backend-7d9f  10.2.0.9,fd00::9  backend          yes
shop       frontend-1    10.2.0.7          frontend         yes
`},
		{args: []string{"certs", "--admin", d.url}, out: `
IDENTITY                                    STATE    USABLE  SERIAL  NOT AFTER             EXPIRES IN  RENEW AT              FAILURES  LAST ERROR
spiffe://cluster.local/ns/pay/sa/backend    ready    yes     1f2e    2026-11-24T11:00:00Z  23h0m       2026-11-23T23:00:00Z  -         -
spiffe://cluster.local/ns/shop/sa/frontend  failing  no      -       -                     -           -                     3         ca: connection refused retrying
`},
		{args: []string{"policies", "--admin", d.url}, out: `
KIND                 NAMESPACE  NAME        ACCEPTED  REASON             ISSUES  MESSAGE
AuthorizationPolicy  pay        allow-shop  yes       FullyEnforced      -       -
AuthorizationPolicy  pay        deny-l7     yes       PartiallyEnforced  2       L7 fields ignored
`},
		{args: []string{"--admin", d.url, "connections"}, out: `
DIRECTION  SOURCE          DESTINATION    WORKLOAD          SOURCE IDENTITY                             DESTINATION IDENTITY                      POLICY          BYTES SENT  BYTES RECEIVED  AGE
outbound   10.2.0.7:51000  10.96.0.10:80  shop/frontend-1   spiffe://cluster.local/ns/shop/sa/frontend  spiffe://cluster.local/ns/pay/sa/backend  -               0           0               5m12s
inbound    10.2.0.7:40001  10.2.0.9:8080  pay/backend-7d9f  spiffe://cluster.local/ns/shop/sa/frontend  spiffe://cluster.local/ns/pay/sa/backend  pay/allow-shop  0           0               42s
`, err: "ambitctl: the daemon's table was full at times: 1 connections since it started are not listed (capacity 2)\n"},
	} {
		t.Run(tc.args[0], func(t *testing.T) {
			code, out, errOut := runCtl(t, tc.args...)
			if code != ExitOK {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if want := strings.TrimPrefix(tc.out, "\n"); out != want {
				t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
			}
			if errOut != tc.err {
				t.Errorf("stderr = %q, want %q", errOut, tc.err)
			}
			assertAligned(t, out)
		})
	}
}

// assertAligned: every column of every line starts where its header does.
func assertAligned(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	var starts []int
	hdr := lines[0]
	for i := 0; i < len(hdr); i++ {
		if hdr[i] != ' ' && (i == 0 || (i >= 2 && hdr[i-1] == ' ' && hdr[i-2] == ' ')) {
			starts = append(starts, i)
		}
	}
	for _, l := range lines[1:] {
		for _, s := range starts[1:] {
			if s >= len(l) || l[s] == ' ' || l[s-1] != ' ' {
				t.Errorf("line %q: no column starting at %d", l, s)
			}
		}
	}
}

func TestJSONOutput(t *testing.T) {
	d := fullDaemon(t)
	code, out, errOut := runCtl(t, "workloads", "--admin", d.url, "-o", "json")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var gotW []workloadView
	if err := json.Unmarshal([]byte(out), &gotW); err != nil || !reflect.DeepEqual(gotW, workloads) {
		t.Errorf("workloads JSON = %v (%v)\n%s", gotW, err, out)
	}

	code, out, _ = runCtl(t, "certs", "--output", "json", "--admin", strings.TrimPrefix(d.url, "http://"))
	var gotC []identity.CertInfo
	if err := json.Unmarshal([]byte(out), &gotC); code != 0 || err != nil || len(gotC) != 2 || gotC[0].NotAfter != certs[0].NotAfter || gotC[1].Failures != 3 {
		t.Errorf("certs JSON (exit %d, %v): %s", code, err, out)
	}

	code, out, _ = runCtl(t, "policies", "-o=json", "--admin="+d.url+"/")
	var gotP []authz.PolicyReport
	if err := json.Unmarshal([]byte(out), &gotP); code != 0 || err != nil || !reflect.DeepEqual(gotP, policies) {
		t.Errorf("policies JSON (exit %d, %v): %s", code, err, out)
	}

	code, out, errOut = runCtl(t, "connections", "--admin", d.url, "-o", "json")
	var snap connections.Snapshot
	if err := json.Unmarshal([]byte(out), &snap); code != 0 || err != nil {
		t.Fatalf("connections JSON (exit %d, %v): %s", code, err, out)
	}
	if errOut != "" {
		t.Errorf("JSON output wrote to stderr: %q", errOut)
	}
	if snap.Active != 2 || snap.Dropped != 1 || snap.Capacity != 2 || len(snap.Connections) != 2 {
		t.Fatalf("snapshot = %+v", snap)
	}
	c := snap.Connections[1]
	if c.Direction != "inbound" || c.SourceAddr != "10.2.0.7:40001" || c.DestinationAddr != "10.2.0.9:8080" ||
		c.Workload != "pay/backend-7d9f" || c.SourceIdentity != frontendID.String() || c.DestinationIdentity != backendID.String() ||
		c.Policy != "pay/allow-shop" || c.AgeSeconds != 42 || !c.Start.Equal(now.Add(-42*time.Second)) {
		t.Errorf("connection = %+v", c)
	}
}

// TestOtherShapes: a section that is an object of counters prints as
// FIELD/VALUE, an object of objects as rows named by key, a list with no
// known field prints every field, and empty sections say so on stderr.
func TestOtherShapes(t *testing.T) {
	d := startDaemon(t, map[string]func() any{
		"policies":     func() any { return authz.Stats{Updates: 4, Policies: 12, PartiallyEnforced: 1} },
		"workloads":    func() any { return map[string]any{"b-pod": map[string]any{"namespace": "x", "enrolled": false}} },
		"certificates": func() any { return []map[string]any{{"weird": "v\t1", "other": 2}} },
	}, false)
	code, out, _ := runCtl(t, "policies", "--admin", d.url)
	if want := "FIELD               VALUE\nBadRequests         0\nNilPoliciesSkipped  0\nNotAccepted         0\nPartiallyEnforced   1\nPolicies            12\nUpdates             4\n"; code != 0 || out != want {
		t.Errorf("stats section (exit %d):\n%s\nwant:\n%s", code, out, want)
	}
	code, out, _ = runCtl(t, "workloads", "--admin", d.url)
	if want := "NAMESPACE  NAME   ENROLLED\nx          b-pod  no\n"; code != 0 || out != want {
		t.Errorf("object of objects (exit %d):\n%s\nwant:\n%s", code, out, want)
	}
	code, out, _ = runCtl(t, "certs", "--admin", d.url)
	if want := "OTHER  WEIRD\n2      v 1\n"; code != 0 || out != want {
		t.Errorf("unknown fields (exit %d):\n%q\nwant:\n%q", code, out, want)
	}

	empty := startDaemon(t, map[string]func() any{
		"workloads": func() any { return []workloadView{} }, "policies": func() any { return nil },
	}, false)
	for cmd, noun := range map[string]string{"workloads": "workloads", "policies": "policies"} {
		code, out, errOut := runCtl(t, cmd, "--admin", empty.url)
		if code != 0 || out != "" || errOut != "ambitctl: no "+noun+"\n" {
			t.Errorf("%s on an empty section: exit %d, stdout %q, stderr %q", cmd, code, out, errOut)
		}
	}
}

func TestDaemonErrors(t *testing.T) {
	d := startDaemon(t, map[string]func() any{"workloads": func() any { return workloads }}, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"certs", "--admin", d.url}, `the daemon's /config_dump has no "certificates" section (unknown section(s): certificates; known: workloads)`},
		{[]string{"connections", "--admin", d.url}, "404 Not Found: connections: this daemon keeps no live-connection table"},
		{[]string{"workloads", "--admin", closed}, "connection refused"},
	} {
		code, out, errOut := runCtl(t, tc.args...)
		if code != ExitError || out != "" || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 ||
			!strings.HasPrefix(errOut, "ambitctl: ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 and one line with %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing command"},
		{[]string{"--admin", "127.0.0.1:15000"}, "missing command"},
		{[]string{"pods", "--admin", "127.0.0.1:15000"}, `unknown command "pods"`},
		{[]string{"workloads"}, "no target: give --admin URL, --node NAME, --pod NAME or --file PATH"},
		{[]string{"workloads", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"workloads", "--admin"}, "flag needs an argument: -admin"},
		{[]string{"workloads", "--admin", "127.0.0.1:15000", "extra"}, `unexpected argument "extra" after workloads`},
		{[]string{"workloads", "--admin", "127.0.0.1:15000", "-o", "xml"}, `-o "xml": want table, json or yaml`},
		{[]string{"workloads", "--file", "x.json", "--admin", "127.0.0.1:15000"}, `give only one of --file, --admin`},
		{[]string{"log", "--file", "x.json"}, `--file: the log command needs a daemon`},
		{[]string{"certs", "--admin", "127.0.0.1:15000", "--level", "debug"}, `--level and --access-log apply to the log command`},
		{[]string{"workloads", "--admin", "ftp://h:1"}, `scheme "ftp"`},
		{[]string{"workloads", "--admin", "http://h:99999"}, `port "99999"`},
		{[]string{"workloads", "--admin", "http://h:1/x?y=1"}, "want only scheme, host and port"},
		{[]string{"workloads", "--admin", "http://:15000"}, "no host"},
		{[]string{"workloads", "--admin", "h:1", "--node", "n1"}, "give only one of --admin, --node, --pod"},
		{[]string{"workloads", "--admin", "h:1", "-n", "x"}, "-n applies to --node and --pod, not --admin"},
		{[]string{"workloads", "--admin", "h:1", "--kubeconfig", "/k"}, "--kubeconfig applies to --node and --pod"},
		{[]string{"workloads", "--node", "Bad_Node"}, `--node "Bad_Node": not a node name`},
		{[]string{"workloads", "--node", "n1", "--admin-port", "0"}, "--admin-port 0: want 1 to 65535"},
		{[]string{"workloads", "--node", "n1", "-n", "-x"}, `--namespace "-x": not a namespace name`},
		{[]string{"workloads", "--node", "n1", "--daemonset", "A"}, `--daemonset "A"`},
		{[]string{"workloads", "--pod", "a/b/c"}, `--pod "a/b/c": want NAME or NAMESPACE/NAME`},
		{[]string{"workloads", "--pod", "a/b", "-n", "c"}, `names namespace "a" but --namespace is "c"`},
		{[]string{"workloads", "--pod", "p", "--daemonset", "ambit"}, "--daemonset applies to --node, not --pod"},
		{[]string{"workloads", "--node", "n1", "--timeout", "0s"}, "--timeout 0s: must be positive"},
		{[]string{"workloads", "--node", "n1", "--timeout", "soon"}, `invalid value "soon" for flag -timeout`},
	} {
		code, out, errOut := runCtl(t, tc.args...)
		if code != ExitUsage || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) ||
			!strings.HasPrefix(errOut, "ambitctl: ") || !strings.HasSuffix(errOut, "(ambitctl -h for usage)\n") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, code, out, errOut, tc.want)
		}
	}
	for _, h := range []string{"-h", "--help"} {
		code, out, errOut := runCtl(t, h)
		if code != ExitOK || !strings.HasPrefix(out, "usage: ambitctl <workloads|certs|policies|connections|log|version>") || errOut != "" {
			t.Errorf("%s: exit %d, stderr %q", h, code, errOut)
		}
	}
}

// TestPodFlagAccepted: --pod forms that parse, with the namespace they
// resolve to.
func TestPodFlagAccepted(t *testing.T) {
	for args, want := range map[string][2]string{
		"--pod ambit-x2k9z":                      {"ambit-system", "ambit-x2k9z"},
		"--pod kube-system/ambit-1":              {"kube-system", "ambit-1"},
		"-n kube-system --pod kube-system/a":     {"kube-system", "a"},
		"--namespace mesh --pod ambit-abc.def-1": {"mesh", "ambit-abc.def-1"},
	} {
		o, err := parse(append([]string{"certs"}, strings.Fields(args)...))
		if err != nil || o.namespace != want[0] || o.pod != want[1] {
			t.Errorf("%s: %v %+v, want %v", args, err, o, want)
		}
	}
}

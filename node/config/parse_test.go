package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

// TestChartArgs parses the command line the chart renders with its default
// values (paths replaced by the fixture's) and checks every field.
func TestChartArgs(t *testing.T) {
	fx := newFixture(t)
	args := []string{
		"--trust-domain=example.org",
		"--trust-domain-aliases=old.example, older.example",
		"--ca-address=https://ambit-ca.ambit-system.svc:15012",
		"--ca-token-file=" + fx.token,
		"--ca-audience=ambit-ca",
		"--bundle-file=" + fx.bundle,
		"--node-name=worker-7",
		"--cni-socket=/var/run/ambit/cni.sock",
		"--bpf-pin-dir=/sys/fs/bpf/ambit",
		"--root-namespace=ambit-system",
		"--mesh-namespace-selector=ambit.dev/mesh=enabled",
		"--mesh-pod-opt-out=ambit.dev/mesh=disabled",
		"--log-level=debug",
		"--metrics-addr=:15020",
		"--ready-addr=:15021",
		"--admin-addr=127.0.0.1:15000",
		"--fips",
		"--cluster-id=east",
		"--cluster-domain=corp.local",
		"--access-log=failures",
		"--access-log-format=ztunnel",
	}
	c, err := Parse(args, env(map[string]string{"NODE_NAME": "ignored", "POD_NAME": "ambit-x7k2p", "POD_NAMESPACE": "ambit-system"}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Config{
		TrustDomain: "example.org", TrustDomainAliases: "old.example, older.example", CAAddress: "https://ambit-ca.ambit-system.svc:15012",
		CATokenFile: fx.token, CAAudience: "ambit-ca", BundleFile: fx.bundle, NodeName: "worker-7",
		CNISocket: "/var/run/ambit/cni.sock", BPFPinDir: "/sys/fs/bpf/ambit", RootNamespace: "ambit-system",
		MeshNamespaceSelector: "ambit.dev/mesh=enabled", MeshPodOptOut: "ambit.dev/mesh=disabled",
		LogLevel: "debug", MetricsAddr: ":15020", ReadyAddr: ":15021", AdminAddr: "127.0.0.1:15000",
		FIPS: true, PodName: "ambit-x7k2p", PodNamespace: "ambit-system",
		NetnsDir: DefaultNetnsDir, CNIBinDir: DefaultCNIBinDir, CNIConfDir: DefaultCNIConfDir,
		ClusterID: "east", ClusterDomain: "corp.local", AccessLog: "failures", AccessLogFormat: "ztunnel",
	}
	c.origin = nil
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Parse:\n got %+v\nwant %+v", c, want)
	}
}

// TestChartContract reads the chart's DaemonSet template and checks that
// every flag it passes to the daemon container is one Parse defines.
func TestChartContract(t *testing.T) {
	data, err := os.ReadFile("../../charts/ambit/templates/daemonset.yaml")
	if err != nil {
		t.Fatalf("the chart is the contract: %v", err)
	}
	text := string(data)
	const daemon = "command: [{{ if .Values.fips }}/ambit-fips{{ else }}/ambit{{ end }}]"
	start := strings.Index(text, daemon)
	if start < 0 {
		t.Fatalf("daemon container (%s) not found in daemonset.yaml", daemon)
	}
	end := strings.Index(text[start:], "env:")
	if end < 0 {
		t.Fatal("end of the daemon's args (env:) not found")
	}
	defined := map[string]bool{}
	for _, n := range FlagNames() {
		defined[n] = true
	}
	passed := regexp.MustCompile(`(?m)^\s*- --([a-z0-9-]+)`).FindAllStringSubmatch(text[start:start+end], -1)
	if len(passed) < 16 {
		t.Fatalf("found only %d flags in the chart's daemon args; did the template change shape?", len(passed))
	}
	for _, m := range passed {
		if !defined[m[1]] {
			t.Errorf("the chart passes --%s, which Parse does not define", m[1])
		}
	}
	if !strings.Contains(text[start:], "name: NODE_NAME") {
		t.Error("the chart no longer sets NODE_NAME; the fallback documented in Config.NodeName is stale")
	}
}

func TestDefaults(t *testing.T) {
	fx := newFixture(t)
	c, err := Parse(fx.args(), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	checks := []struct{ name, got, want string }{
		{"trust-domain", c.TrustDomain, "cluster.local"},
		{"ca-audience", c.CAAudience, "ambit-ca"},
		{"cni-socket", c.CNISocket, "/var/run/ambit/cni.sock"},
		{"bpf-pin-dir", c.BPFPinDir, "/sys/fs/bpf/ambit"},
		{"mesh-namespace-selector", c.MeshNamespaceSelector, "ambit.dev/mesh=enabled"},
		{"mesh-pod-opt-out", c.MeshPodOptOut, "ambit.dev/mesh=disabled"},
		{"log-level", c.LogLevel, "info"},
		{"metrics-addr", c.MetricsAddr, ":15020"},
		{"ready-addr", c.ReadyAddr, ":15021"},
		{"admin-addr", c.AdminAddr, "127.0.0.1:15000"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("default %s = %q, want %q", ck.name, ck.got, ck.want)
		}
		if o := c.Origin(ck.name); o != "--"+ck.name {
			t.Errorf("Origin(%s) = %q for a default, want --%s", ck.name, o, ck.name)
		}
	}
	if c.FIPS {
		t.Error("FIPS on by default")
	}
	d := Default()
	if d.CATokenFile != DefaultCATokenFile || d.BundleFile != DefaultBundleFile {
		t.Errorf("Default() files = %q, %q", d.CATokenFile, d.BundleFile)
	}
	if d.CAAddress != "" || d.NodeName != "" || d.RootNamespace != "" {
		t.Errorf("Default() fills a required field: %+v", d)
	}
}

// TestPrecedence: flag, then AMBIT_*, then the downward API, then default.
func TestPrecedence(t *testing.T) {
	fx := newFixture(t)
	base := []string{
		"--ca-address=https://ca.example:15012", "--ca-token-file=" + fx.token, "--bundle-file=" + fx.bundle,
	}
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		field  func(Config) string
		want   string
		origin string // flag name whose Origin is checked, "" for none
		from   string
	}{
		{"flag beats env", []string{"--log-level=warn", "--node-name=n", "--root-namespace=r"},
			map[string]string{"AMBIT_LOG_LEVEL": "debug"}, func(c Config) string { return c.LogLevel }, "warn", "log-level", "--log-level"},
		{"env beats default", []string{"--node-name=n", "--root-namespace=r"},
			map[string]string{"AMBIT_LOG_LEVEL": "debug"}, func(c Config) string { return c.LogLevel }, "debug", "log-level", "AMBIT_LOG_LEVEL"},
		{"empty env is unset", []string{"--node-name=n", "--root-namespace=r"},
			map[string]string{"AMBIT_LOG_LEVEL": ""}, func(c Config) string { return c.LogLevel }, "info", "log-level", "--log-level"},
		{"flag set to the default still beats env", []string{"--metrics-addr=:15020", "--node-name=n", "--root-namespace=r"},
			map[string]string{"AMBIT_METRICS_ADDR": ":9090"}, func(c Config) string { return c.MetricsAddr }, ":15020", "metrics-addr", "--metrics-addr"},
		{"env trust domain", []string{"--node-name=n", "--root-namespace=r"},
			map[string]string{"AMBIT_TRUST_DOMAIN": "corp.example"}, func(c Config) string { return c.TrustDomain }, "corp.example", "trust-domain", "AMBIT_TRUST_DOMAIN"},
		{"NODE_NAME when no flag", []string{"--root-namespace=r"},
			map[string]string{"NODE_NAME": "from-downward"}, func(c Config) string { return c.NodeName }, "from-downward", "node-name", "NODE_NAME"},
		{"NODE_NAME when the flag is empty", []string{"--node-name=", "--root-namespace=r"},
			map[string]string{"NODE_NAME": "from-downward"}, func(c Config) string { return c.NodeName }, "from-downward", "node-name", "NODE_NAME"},
		{"AMBIT_NODE_NAME beats NODE_NAME", []string{"--root-namespace=r"},
			map[string]string{"NODE_NAME": "downward", "AMBIT_NODE_NAME": "ambit-env"}, func(c Config) string { return c.NodeName }, "ambit-env", "node-name", "AMBIT_NODE_NAME"},
		{"flag beats NODE_NAME", []string{"--node-name=flagged", "--root-namespace=r"},
			map[string]string{"NODE_NAME": "downward", "AMBIT_NODE_NAME": "ambit-env"}, func(c Config) string { return c.NodeName }, "flagged", "node-name", "--node-name"},
		{"POD_NAMESPACE for the root namespace", []string{"--node-name=n"},
			map[string]string{"POD_NAMESPACE": "ambit"}, func(c Config) string { return c.RootNamespace }, "ambit", "root-namespace", "POD_NAMESPACE"},
		{"root-namespace flag beats POD_NAMESPACE", []string{"--node-name=n", "--root-namespace=istio-system"},
			map[string]string{"POD_NAMESPACE": "ambit"}, func(c Config) string { return c.RootNamespace + "," + c.PodNamespace }, "istio-system,ambit", "root-namespace", "--root-namespace"},
		{"AMBIT_FIPS=true", []string{"--node-name=n", "--root-namespace=r"},
			map[string]string{"AMBIT_FIPS": "true"}, func(c Config) string { return boolStr(c.FIPS) }, "true", "fips", "AMBIT_FIPS"},
		{"--fips=false beats AMBIT_FIPS=true", []string{"--fips=false", "--node-name=n", "--root-namespace=r"},
			map[string]string{"AMBIT_FIPS": "true"}, func(c Config) string { return boolStr(c.FIPS) }, "false", "fips", "--fips"},
		{"HBONE caps from flag and env", []string{"--hbone-max-handshakes=64", "--node-name=n", "--root-namespace=r"},
			map[string]string{"AMBIT_HBONE_MAX_STREAMS_PER_IDENTITY": "-1"}, func(c Config) string {
				return fmt.Sprint(c.HBONEMaxHandshakes, ",", c.HBONEMaxStreamsPerIdentity)
			}, "64,-1", "hbone-max-streams-per-identity", "AMBIT_HBONE_MAX_STREAMS_PER_IDENTITY"},
		{"env selector", []string{"--node-name=n", "--root-namespace=r"},
			map[string]string{"AMBIT_MESH_NAMESPACE_SELECTOR": "mesh in (on,yes)"}, func(c Config) string { return c.MeshNamespaceSelector }, "mesh in (on,yes)", "mesh-namespace-selector", "AMBIT_MESH_NAMESPACE_SELECTOR"},
		{"unrelated variables are ignored", []string{"--node-name=n", "--root-namespace=r"},
			map[string]string{"LOG_LEVEL": "debug", "ambit_log_level": "debug"}, func(c Config) string { return c.LogLevel }, "info", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(append(append([]string{}, base...), tt.args...), env(tt.env))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := tt.field(c); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if tt.origin != "" {
				if got := c.Origin(tt.origin); got != tt.from {
					t.Errorf("Origin(%s) = %q, want %q", tt.origin, got, tt.from)
				}
			}
		})
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func TestHelp(t *testing.T) {
	for _, a := range []string{"-h", "--help", "-help"} {
		_, err := Parse([]string{a}, nil)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("Parse(%s) = %v, want flag.ErrHelp", a, err)
		}
		if errors.Is(err, ErrUsage) {
			t.Errorf("Parse(%s) wraps ErrUsage; help must exit 0", a)
		}
	}
	var buf bytes.Buffer
	PrintUsage(&buf)
	out := buf.String()
	for _, n := range FlagNames() {
		if !strings.Contains(out, "--"+n+" ") || !strings.Contains(out, EnvName(n)) {
			t.Errorf("usage lacks --%s or %s:\n%s", n, EnvName(n), out)
		}
	}
	if !strings.Contains(out, `(default ":15020")`) {
		t.Errorf("usage lacks the metrics default:\n%s", out)
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"trust-domain": "AMBIT_TRUST_DOMAIN", "fips": "AMBIT_FIPS", "mesh-pod-opt-out": "AMBIT_MESH_POD_OPT_OUT",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAccessors(t *testing.T) {
	fx := newFixture(t)
	c, err := Parse(fx.args("--log-level=WARN", "--trust-domain=example.org", "--mesh-namespace-selector=mesh in (on)"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Level() != slog.LevelWarn {
		t.Errorf("Level() = %v, want WARN", c.Level())
	}
	if td := c.SPIFFETrustDomain(); td.Name() != "example.org" {
		t.Errorf("SPIFFETrustDomain() = %q", td.Name())
	}
	c.TrustDomainAliases = " old.example,,older.example, old.example "
	if got := c.Aliases(); !slices.Equal(got, []string{"old.example", "older.example"}) {
		t.Errorf("Aliases() = %q", got)
	}
	if got := c.SPIFFEAliases(); len(got) != 2 || got[0].Name() != "old.example" || got[1].Name() != "older.example" {
		t.Errorf("SPIFFEAliases() = %v", got)
	}
	ns := c.NamespaceSelector()
	if !ns.Matches(labels.Set{"mesh": "on"}) || ns.Matches(labels.Set{"mesh": "off"}) || ns.Matches(labels.Set{}) {
		t.Errorf("NamespaceSelector() = %v matches wrongly", ns)
	}
	opt := c.PodOptOutSelector()
	if !opt.Matches(labels.Set{"ambit.dev/mesh": "disabled"}) || opt.Matches(labels.Set{"ambit.dev/mesh": "enabled"}) {
		t.Errorf("PodOptOutSelector() = %v matches wrongly", opt)
	}
	// Invalid fields never widen: an unparseable or empty selector matches nothing.
	bad := Config{MeshNamespaceSelector: "a in (", MeshPodOptOut: "", LogLevel: "loud", TrustDomain: "Bad"}
	if bad.NamespaceSelector().Matches(labels.Set{"a": "x"}) || bad.PodOptOutSelector().Matches(labels.Set{}) {
		t.Error("an invalid selector matches something")
	}
	if bad.Level() != slog.LevelInfo || !bad.SPIFFETrustDomain().IsZero() {
		t.Errorf("invalid accessors: level %v, trust domain %q", bad.Level(), bad.SPIFFETrustDomain().Name())
	}
}

package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBadInput: every bad input is one line naming the input and the
// problem, wraps ErrUsage, and yields no Config.
func TestBadInput(t *testing.T) {
	fx := newFixture(t)
	emptyToken := fx.write(t, "empty-token", []byte(" \n"), 0o600)
	notPEM := fx.write(t, "not-pem.crt", []byte("hello"), 0o644)
	keyOnly := fx.write(t, "key.pem", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o644)
	badCert := fx.write(t, "bad.crt", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644)
	long := "/" + strings.Repeat("s", maxSocketPath)

	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		source string // UsageError.Source
		want   string // the whole message
	}{
		// The command line itself.
		{"unknown flag", []string{"--metrics-port=15020"}, nil, "--metrics-port", `--metrics-port: unknown flag`},
		{"unknown single-dash flag", []string{"-x"}, nil, "--x", `--x: unknown flag`},
		{"unknown flag with a newline", []string{"--a\nb=1"}, nil, "--a\nb", `--a b: unknown flag`},
		{"positional argument", []string{"ca"}, nil, "argument", `argument "ca": unexpected (the daemon takes flags only)`},
		{"bad boolean flag", []string{"--fips=maybe"}, nil, "", `invalid boolean value "maybe" for -fips: parse error`},
		{"flag without its value", []string{"--log-level"}, nil, "", `flag needs an argument: -log-level`},
		{"bad boolean env", nil, map[string]string{"AMBIT_FIPS": "maybe"}, "AMBIT_FIPS", `AMBIT_FIPS "maybe": not a boolean (want true or false)`},

		// Trust domain.
		{"trust domain upper case", []string{"--trust-domain=Cluster.Local"}, nil, "--trust-domain",
			`--trust-domain "Cluster.Local": not a SPIFFE trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`},
		{"trust domain empty", []string{"--trust-domain="}, nil, "--trust-domain", `--trust-domain "": not a SPIFFE trust domain: trust domain is missing`},
		{"trust domain as SPIFFE ID", []string{"--trust-domain=spiffe://cluster.local"}, nil, "--trust-domain",
			`--trust-domain "spiffe://cluster.local": want a bare trust domain name such as cluster.local, not a SPIFFE ID`},
		{"trust domain with path", []string{"--trust-domain=spiffe://cluster.local/ns/a"}, nil, "--trust-domain",
			`--trust-domain "spiffe://cluster.local/ns/a": want a bare trust domain name such as cluster.local, not a SPIFFE ID`},
		{"alias upper case", []string{"--trust-domain-aliases=old.local,Old.Local"}, nil, "--trust-domain-aliases",
			`--trust-domain-aliases "old.local,Old.Local": "Old.Local" is not a SPIFFE trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`},
		{"alias as SPIFFE ID", []string{"--trust-domain-aliases=spiffe://old.local"}, nil, "--trust-domain-aliases",
			`--trust-domain-aliases "spiffe://old.local": "spiffe://old.local": want bare trust domain names such as old.local, not SPIFFE IDs`},
		{"alias is the trust domain", []string{"--trust-domain-aliases=old.local, cluster.local"}, nil, "--trust-domain-aliases",
			`--trust-domain-aliases "old.local, cluster.local": "cluster.local" is the trust domain itself`},
		{"alias from env", nil, map[string]string{"AMBIT_TRUST_DOMAIN_ALIASES": "a b"}, "AMBIT_TRUST_DOMAIN_ALIASES",
			`AMBIT_TRUST_DOMAIN_ALIASES "a b": "a b" is not a SPIFFE trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`},
		{"trust domain from env", nil, map[string]string{"AMBIT_TRUST_DOMAIN": "a b"}, "AMBIT_TRUST_DOMAIN",
			`AMBIT_TRUST_DOMAIN "a b": not a SPIFFE trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`},

		// CA address.
		{"ca address missing", []string{"--ca-address="}, nil, "--ca-address", `--ca-address "": required (the https URL of the CA)`},
		{"ca address http", []string{"--ca-address=http://ca:15012"}, nil, "--ca-address", `--ca-address "http://ca:15012": must be an https URL`},
		{"ca address bare host", []string{"--ca-address=ca.svc:15012"}, nil, "--ca-address", `--ca-address "ca.svc:15012": must be an https URL`},
		{"ca address no host", []string{"--ca-address=https:///x"}, nil, "--ca-address", `--ca-address "https:///x": has no host`},
		{"ca address credentials", []string{"--ca-address=https://u:p@ca:15012"}, nil, "--ca-address", `--ca-address "https://u:p@ca:15012": must not carry credentials (the daemon authenticates with its token)`},
		{"ca address port", []string{"--ca-address=https://ca:99999"}, nil, "--ca-address", `--ca-address "https://ca:99999": port out of range`},
		{"ca address empty port", []string{"--ca-address=https://ca:"}, nil, "--ca-address", `--ca-address "https://ca:": missing port`},
		{"ca address query", []string{"--ca-address=https://ca?x=1"}, nil, "--ca-address", `--ca-address "https://ca?x=1": must not have a query or fragment`},
		{"ca address not a URL", []string{"--ca-address=https://ca:15012/%zz"}, nil, "--ca-address",
			`--ca-address "https://ca:15012/%zz": not a URL`},

		// Files.
		{"token missing", []string{"--ca-token-file=" + fx.dir + "/nope"}, nil, "--ca-token-file", `--ca-token-file "` + fx.dir + `/nope": no such file`},
		{"token is a directory", []string{"--ca-token-file=" + fx.dir}, nil, "--ca-token-file", `--ca-token-file "` + fx.dir + `": not a regular file`},
		{"token empty", []string{"--ca-token-file=" + emptyToken}, nil, "--ca-token-file", `--ca-token-file "` + emptyToken + `": is empty`},
		{"token path empty", []string{"--ca-token-file="}, nil, "--ca-token-file", `--ca-token-file "": required`},
		{"audience empty", []string{"--ca-audience="}, nil, "--ca-audience", `--ca-audience "": required`},
		{"audience with space", []string{"--ca-audience=ambit ca"}, nil, "--ca-audience", `--ca-audience "ambit ca": must not contain spaces or control characters`},
		{"bundle missing", []string{"--bundle-file=/nonexistent/ca.crt"}, nil, "--bundle-file", `--bundle-file "/nonexistent/ca.crt": no such file`},
		{"bundle not PEM", []string{"--bundle-file=" + notPEM}, nil, "--bundle-file", `--bundle-file "` + notPEM + `": holds no PEM certificate`},
		{"bundle key only", []string{"--bundle-file=" + keyOnly}, nil, "--bundle-file", `--bundle-file "` + keyOnly + `": holds no PEM certificate`},
		{"bundle bad certificate", []string{"--bundle-file=" + badCert}, nil, "--bundle-file", `--bundle-file "` + badCert + `": certificate 1 does not parse: x509: malformed certificate`},

		// Names.
		{"node name empty", []string{"--node-name="}, nil, "--node-name", `--node-name "": required (set --node-name, AMBIT_NODE_NAME or NODE_NAME)`},
		{"node name unexpanded", []string{"--node-name=$(NODE_NAME)"}, nil, "--node-name",
			`--node-name "$(NODE_NAME)": not a valid Kubernetes name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		{"node name from NODE_NAME", []string{"--node-name="}, map[string]string{"NODE_NAME": "Node_1"}, "NODE_NAME",
			`NODE_NAME "Node_1": not a valid Kubernetes name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		{"root namespace empty", []string{"--root-namespace="}, nil, "--root-namespace", `--root-namespace "": required (set --root-namespace, AMBIT_ROOT_NAMESPACE or POD_NAMESPACE)`},
		{"root namespace with a dot", []string{"--root-namespace=a.b"}, nil, "--root-namespace",
			`--root-namespace "a.b": not a valid Kubernetes name: must not contain dots`},
		{"root namespace upper case", []string{"--root-namespace=Ambit"}, nil, "--root-namespace",
			`--root-namespace "Ambit": not a valid Kubernetes name: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`},
		{"bad POD_NAME", nil, map[string]string{"POD_NAME": "Ambit_1"}, "POD_NAME", `POD_NAME "Ambit_1": not a valid pod name`},
		{"bad POD_NAMESPACE", []string{"--root-namespace=r"}, map[string]string{"POD_NAMESPACE": "a.b"}, "POD_NAMESPACE", `POD_NAMESPACE "a.b": not a valid namespace name`},

		// Paths.
		{"socket relative", []string{"--cni-socket=run/cni.sock"}, nil, "--cni-socket", `--cni-socket "run/cni.sock": must be an absolute path`},
		{"socket too long", []string{"--cni-socket=" + long}, nil, "--cni-socket", `--cni-socket "` + long + `": longer than the 107 bytes a unix socket path may have`},
		{"pin dir empty", []string{"--bpf-pin-dir="}, nil, "--bpf-pin-dir", `--bpf-pin-dir "": must be an absolute path`},
		{"pin dir relative", []string{"--bpf-pin-dir=bpf/ambit"}, nil, "--bpf-pin-dir", `--bpf-pin-dir "bpf/ambit": must be an absolute path`},

		// Selectors and level.
		{"namespace selector empty", []string{"--mesh-namespace-selector="}, nil, "--mesh-namespace-selector",
			`--mesh-namespace-selector "": must not be empty (an empty selector matches everything)`},
		{"namespace selector blank", []string{"--mesh-namespace-selector=  "}, nil, "--mesh-namespace-selector",
			`--mesh-namespace-selector "  ": must not be empty (an empty selector matches everything)`},
		{"namespace selector unparseable", []string{"--mesh-namespace-selector=mesh in (on"}, nil, "--mesh-namespace-selector",
			`--mesh-namespace-selector "mesh in (on": not a label selector: unable to parse requirement: found '', expected: ',' or ')'`},
		{"opt-out selector bad key", []string{"--mesh-pod-opt-out=-bad=x"}, nil, "--mesh-pod-opt-out", ""},
		{"opt-out selector empty from env", nil, map[string]string{"AMBIT_MESH_POD_OPT_OUT": " "}, "AMBIT_MESH_POD_OPT_OUT",
			`AMBIT_MESH_POD_OPT_OUT " ": must not be empty (an empty selector matches everything)`},
		{"log level", []string{"--log-level=verbose"}, nil, "--log-level", `--log-level "verbose": unknown level (want debug, info, warn or error)`},
		{"access log", []string{"--access-log=some"}, nil, "--access-log", `--access-log "some": want one of all, failures, off`},
		{"access log format", nil, map[string]string{"AMBIT_ACCESS_LOG_FORMAT": "envoy"}, "AMBIT_ACCESS_LOG_FORMAT", `AMBIT_ACCESS_LOG_FORMAT "envoy": want one of ambit, ztunnel`},
		{"cluster domain", []string{"--cluster-domain=Bad_Domain"}, nil, "--cluster-domain", ""},
		{"log level from env", nil, map[string]string{"AMBIT_LOG_LEVEL": "trace"}, "AMBIT_LOG_LEVEL", `AMBIT_LOG_LEVEL "trace": unknown level (want debug, info, warn or error)`},

		// Listen addresses.
		{"port out of range", []string{"--metrics-addr=x:99999"}, nil, "--metrics-addr", `--metrics-addr "x:99999": port out of range`},
		{"port zero", []string{"--ready-addr=:0"}, nil, "--ready-addr", `--ready-addr ":0": port out of range`},
		{"port negative", []string{"--metrics-addr=:-1"}, nil, "--metrics-addr", `--metrics-addr ":-1": port is not a number`},
		{"port named", []string{"--metrics-addr=:http"}, nil, "--metrics-addr", `--metrics-addr ":http": port is not a number`},
		{"port missing", []string{"--metrics-addr=0.0.0.0:"}, nil, "--metrics-addr", `--metrics-addr "0.0.0.0:": missing port`},
		{"no host:port", []string{"--metrics-addr=15020"}, nil, "--metrics-addr", `--metrics-addr "15020": want host:port`},
		{"unbracketed IPv6", []string{"--ready-addr=::1:15021"}, nil, "--ready-addr", `--ready-addr "::1:15021": want host:port`},
		{"bad host", []string{"--metrics-addr=bad_host!:15020"}, nil, "--metrics-addr", `--metrics-addr "bad_host!:15020": host is neither an IP address nor a DNS name`},
		{"port from env", nil, map[string]string{"AMBIT_METRICS_ADDR": "x:99999"}, "AMBIT_METRICS_ADDR", `AMBIT_METRICS_ADDR "x:99999": port out of range`},
		{"admin on all addresses", []string{"--admin-addr=:15000"}, nil, "--admin-addr", `--admin-addr ":15000": must be a loopback address (127.0.0.1, ::1 or localhost)`},
		{"admin on 0.0.0.0", []string{"--admin-addr=0.0.0.0:15000"}, nil, "--admin-addr", `--admin-addr "0.0.0.0:15000": must be a loopback address (127.0.0.1, ::1 or localhost)`},
		{"admin on a pod IP", []string{"--admin-addr=10.0.0.7:15000"}, nil, "--admin-addr", `--admin-addr "10.0.0.7:15000": must be a loopback address (127.0.0.1, ::1 or localhost)`},
		{"admin on a name", []string{"--admin-addr=admin.local:15000"}, nil, "--admin-addr", `--admin-addr "admin.local:15000": must be a loopback address (127.0.0.1, ::1 or localhost)`},
		{"admin bad port", []string{"--admin-addr=127.0.0.1:70000"}, nil, "--admin-addr", `--admin-addr "127.0.0.1:70000": port out of range`},
		{"ready on the metrics port", []string{"--ready-addr=:15020"}, nil, "--ready-addr", `--ready-addr ":15020": same port as --metrics-addr ":15020"`},
		{"admin inside the metrics wildcard", []string{"--metrics-addr=:15000"}, nil, "--admin-addr", `--admin-addr "127.0.0.1:15000": same port as --metrics-addr ":15000"`},
		{"conflict named by env", nil, map[string]string{"AMBIT_READY_ADDR": "0.0.0.0:15020"}, "AMBIT_READY_ADDR", `AMBIT_READY_ADDR "0.0.0.0:15020": same port as --metrics-addr ":15020"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(fx.args(tt.args...), env(tt.env))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", c)
			}
			if c.NodeName != "" || c.CAAddress != "" {
				t.Errorf("Parse returned a Config with its error: %+v", c)
			}
			checkUsage(t, err, tt.source, tt.want)
		})
	}
}

// TestFileFromEnv: AMBIT_CA_TOKEN_FILE is ignored when the flag is given,
// used otherwise, and named in the error.
func TestFileFromEnv(t *testing.T) {
	fx := newFixture(t)
	vars := env(map[string]string{"AMBIT_CA_TOKEN_FILE": "/nonexistent/token"})
	if _, err := Parse(fx.args(), vars); err != nil {
		t.Fatalf("--ca-token-file did not win over AMBIT_CA_TOKEN_FILE: %v", err)
	}
	args := []string{"--ca-address=https://ca:15012", "--bundle-file=" + fx.bundle, "--node-name=n", "--root-namespace=r"}
	_, err := Parse(args, vars)
	checkUsage(t, err, "AMBIT_CA_TOKEN_FILE", `AMBIT_CA_TOKEN_FILE "/nonexistent/token": no such file`)
}

func checkUsage(t *testing.T, err error, source, want string) {
	t.Helper()
	if !errors.Is(err, ErrUsage) {
		t.Fatalf("error %v does not wrap ErrUsage", err)
	}
	var ue *UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("error %v is not a *UsageError", err)
	}
	if ue.Source != source {
		t.Errorf("Source = %q, want %q", ue.Source, source)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("message is not one line: %q", msg)
	}
	if want != "" && msg != want {
		t.Errorf("message\n got %s\nwant %s", msg, want)
	}
	if want == "" && !strings.HasPrefix(msg, source+" ") {
		t.Errorf("message %q does not start with %s", msg, source)
	}
}

// TestGoodInput: values at the edges that must be accepted.
func TestGoodInput(t *testing.T) {
	fx := newFixture(t)
	for _, args := range [][]string{
		{"--admin-addr=localhost:15000"},
		{"--admin-addr=[::1]:15000"},
		{"--admin-addr=127.0.0.2:1"},
		{"--metrics-addr=[::]:65535", "--ready-addr=0.0.0.0:1"},
		{"--metrics-addr=metrics.local:15020"},
		{"--metrics-addr=127.0.0.1:15000", "--admin-addr=[::1]:15000"}, // same port, disjoint hosts
		{"--ca-address=https://10.96.0.12"},
		{"--ca-address=https://[fd00::12]:15012/sign"},
		{"--trust-domain=td_1.example-org"},
		{"--log-level=ERROR"},
		{"--mesh-namespace-selector=istio.io/dataplane-mode in (ambient),!legacy"},
		{"--mesh-pod-opt-out=sidecar.istio.io/inject"},
		{"--fips=true"},
		{"--node-name=ip-10-0-0-1.ec2.internal"},
	} {
		if _, err := Parse(fx.args(args...), nil); err != nil {
			t.Errorf("Parse(%v): %v", args, err)
		}
	}
}

// TestValidateHandBuilt: Validate on a Config built without Parse.
func TestValidateHandBuilt(t *testing.T) {
	fx := newFixture(t)
	if err := fx.valid().Validate(); err != nil {
		t.Fatalf("valid Config: %v", err)
	}
	err := Default().Validate()
	checkUsage(t, err, "--ca-address", `--ca-address "": required (the https URL of the CA)`)

	c := fx.valid()
	c.MetricsAddr = "x:99999"
	checkUsage(t, c.Validate(), "--metrics-addr", `--metrics-addr "x:99999": port out of range`)

	// Only the first problem, in the chart's flag order.
	c.TrustDomain = "BAD"
	checkUsage(t, c.Validate(), "--trust-domain", "")
}

func TestUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads a mode-0000 file; the permission path needs an unprivileged user")
	}
	fx := newFixture(t)
	p := fx.write(t, "locked", []byte("token"), 0o000)
	_, err := Parse(fx.args("--ca-token-file="+p), nil)
	checkUsage(t, err, "--ca-token-file", `--ca-token-file "`+p+`": not readable: permission denied`)
}

// TestSpecialFiles: a FIFO or a device as a token or bundle is refused at
// once (opening a FIFO would block start-up until a writer came).
func TestSpecialFiles(t *testing.T) {
	fx := newFixture(t)
	fifo := filepath.Join(fx.dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Parse(fx.args("--ca-token-file="+fifo), nil)
		done <- err
	}()
	select {
	case err := <-done:
		checkUsage(t, err, "--ca-token-file", `--ca-token-file "`+fifo+`": not a regular file`)
	case <-time.After(5 * time.Second):
		t.Fatal("Parse blocked on a FIFO token file")
	}
	_, err := Parse(fx.args("--bundle-file=/dev/zero"), nil)
	checkUsage(t, err, "--bundle-file", `--bundle-file "/dev/zero": not a regular file`)

	big := fx.write(t, "big.crt", nil, 0o644)
	if err := os.Truncate(big, maxFileSize+1); err != nil {
		t.Fatal(err)
	}
	_, err = Parse(fx.args("--bundle-file="+big), nil)
	checkUsage(t, err, "--bundle-file", `--bundle-file "`+big+`": larger than 4194304 bytes`)
}

func TestErrorNeverQuotesTheToken(t *testing.T) {
	fx := newFixture(t)
	secret := "s3cr3t-token-value"
	// A token file given as the bundle: rejected without its content in the message.
	p := fx.write(t, "tok", []byte(secret), 0o600)
	_, err := Parse(fx.args("--bundle-file="+p), nil)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("error %v leaks the file's content", err)
	}
}

func TestUsageErrorFormat(t *testing.T) {
	e := &UsageError{Source: "--x", Value: "a\nb", Reason: "bad\n  thing"}
	if got, want := e.Error(), `--x "a\nb": bad thing`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e2 := &UsageError{Reason: "line one\nline two"}
	if got := e2.Error(); got != "line one line two" {
		t.Errorf("Error() = %q", got)
	}
	inner := errors.New("inner")
	e3 := &UsageError{Source: "--y", Reason: "r", Err: inner}
	if !errors.Is(e3, inner) || !errors.Is(e3, ErrUsage) {
		t.Error("UsageError does not unwrap to both ErrUsage and its cause")
	}
}

func TestNodePaths(t *testing.T) {
	fx := newFixture(t)
	for _, tc := range []struct {
		args []string
		want string // "" = valid
	}{
		{[]string{"--cgroup-root="}, ""},
		{[]string{"--cgroup-root=/sys/fs/cgroup/unified"}, ""},
		{[]string{"--cgroup-root=sys/fs/cgroup"}, `--cgroup-root "sys/fs/cgroup": must be an absolute path`},
		{[]string{"--netns-dir="}, `--netns-dir "": must be an absolute path`},
		{[]string{"--cni-bin-dir=", "--cni-conf-dir="}, ""},
		{[]string{"--cni-conf-dir=net.d"}, `--cni-conf-dir "net.d": must be an absolute path`},
		{[]string{"--cni-exclude-namespaces=kube-system, ambit-system"}, ""},
		{[]string{"--cni-exclude-namespaces=kube_system"}, `--cni-exclude-namespaces "kube_system": "kube_system" is not a namespace name`},
	} {
		_, err := Parse(fx.args(tc.args...), env(nil))
		if tc.want == "" {
			if err != nil {
				t.Errorf("%v: %v", tc.args, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, ErrUsage) {
			t.Errorf("%v: got %v, want prefix %q", tc.args, err, tc.want)
		}
	}
	c, err := Parse(fx.args("--cni-exclude-namespaces= kube-system,,ambit-system "), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ExcludeNamespaces(); !reflect.DeepEqual(got, []string{"kube-system", "ambit-system"}) {
		t.Errorf("ExcludeNamespaces = %q", got)
	}
}

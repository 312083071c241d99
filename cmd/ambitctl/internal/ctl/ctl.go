// Package ctl is ambitctl: it reads one node daemon's admin endpoint
// (node/admin: /config_dump sections and /connections) and prints
// workloads, certificates, policies or live connections (with the bytes
// each carried so far) as an aligned table, JSON or YAML; `log` reads and
// changes the daemon's log level and access log level (/logging);
// `version` prints its own; --file reads a saved dump instead of a daemon.
//
// The endpoint is reached directly (--admin URL, e.g. after kubectl
// port-forward, or from inside the daemon pod) or through the API
// server's port-forward to the daemon pod (--node NAME or --pod NAME):
// the pod is the one of the ambit DaemonSet's selector scheduled on that
// node, and the admin port (loopback inside the pod) is forwarded to an
// ephemeral 127.0.0.1 port for the duration of the command.
//
// The config_dump sections are rendered by field name, case and
// underscores ignored ("serviceAccount", "ServiceAccount" and
// "service_account" are one column), so the CLI keeps working when a
// section gains fields or changes its Go type; a section that is an
// object of scalars prints as FIELD/VALUE, and a list whose fields match
// no known column prints every field. -o json prints the section as the
// daemon sent it.
//
// Exit status: 0 on success, 1 when the daemon or the cluster cannot be
// read (one line on stderr), 2 for bad usage (one line naming the
// problem).
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// DefaultNamespace is where the chart installs the daemon.
const DefaultNamespace = "ambit-system"

// DefaultAdminPort is the daemon's admin port (node/admin.DefaultAddr).
const DefaultAdminPort = 15000

// DaemonLabel selects the ambit DaemonSet when --daemonset is not given
// (the chart's ambit.daemonSelector).
const DaemonLabel = "app.kubernetes.io/name=ambit"

// errUsage marks bad usage (exit 2).
var errUsage = errors.New("usage")

// commands and the config_dump section each reads ("" = /connections).
var commands = map[string]string{
	"workloads":   "workloads",
	"certs":       "certificates",
	"policies":    "policies",
	"connections": "",
	"log":         "", // /logging
	"version":     "", // no daemon needed
}

const usageText = `usage: ambitctl <workloads|certs|policies|connections|log|version> [flags]

Shows one node's ambit daemon state from its admin endpoint.

  log                    prints the daemon's log level and access log level;
    --level LEVEL          sets the log level (debug, info, warn, error)
    --access-log LEVEL     sets which connections are logged (all, failures, off)
  version                prints ambitctl's version

Target (exactly one; version needs none):
  --admin URL            the admin endpoint, e.g. http://127.0.0.1:15000
  --file PATH            a saved dump instead of a daemon: the output of -o json of
                         the same command, or a whole /config_dump
  --node NAME            the ambit daemon pod on node NAME, via the API server's port-forward
  --pod [NS/]NAME        that daemon pod, via the API server's port-forward
With --node or --pod:
  --kubeconfig PATH      default $KUBECONFIG, then ~/.kube/config, then in-cluster
  --context NAME         kubeconfig context (default the current one)
  -n, --namespace NS     the daemon's namespace (default ambit-system)
  --daemonset NAME       the DaemonSet whose selector finds the pod
                         (default the one labelled app.kubernetes.io/name=ambit)
  --admin-port PORT      the admin port inside the pod (default 15000)
Output:
  -o, --output FORMAT    table (default), json or yaml
  --timeout DURATION     for the whole command (default 30s)
`

// options are the parsed command line.
type options struct {
	command, section string
	admin            string // base URL, with --admin
	node, pod        string
	kubeconfig, kctx string
	namespace        string
	daemonset        string
	adminPort        int
	output           string
	file             string
	level, access    string // log: what to set
	timeout          time.Duration
	now              func() time.Time
}

// Main runs ambitctl with args (without the program name) and returns the
// exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, stdout, stderr, time.Now)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, now func() time.Time) int {
	opts, err := parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usageText)
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ambitctl: %s (ambitctl -h for usage)\n", oneLine(strings.TrimPrefix(err.Error(), "usage: ")))
		return ExitUsage
	}
	opts.now = now
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	if err := execute(ctx, opts, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "ambitctl: %s\n", oneLine(err.Error()))
		return ExitError
	}
	return ExitOK
}

func usagef(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// parse reads the command and flags; flags may come before or after the
// command.
func parse(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("ambitctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&o.admin, "admin", "", "")
	fs.StringVar(&o.file, "file", "", "")
	fs.StringVar(&o.level, "level", "", "")
	fs.StringVar(&o.access, "access-log", "", "")
	fs.StringVar(&o.node, "node", "", "")
	fs.StringVar(&o.pod, "pod", "", "")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "")
	fs.StringVar(&o.kctx, "context", "", "")
	fs.StringVar(&o.namespace, "namespace", DefaultNamespace, "")
	fs.StringVar(&o.namespace, "n", DefaultNamespace, "")
	fs.StringVar(&o.daemonset, "daemonset", "", "")
	fs.IntVar(&o.adminPort, "admin-port", DefaultAdminPort, "")
	fs.StringVar(&o.output, "output", "table", "")
	fs.StringVar(&o.output, "o", "table", "")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "")

	if err := fs.Parse(args); err != nil {
		return nil, flagErr(err)
	}
	if fs.NArg() == 0 {
		return nil, usagef("missing command: one of workloads, certs, policies, connections, log, version")
	}
	o.command = fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return nil, flagErr(err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q after %s", fs.Arg(0), o.command)
	}
	section, ok := commands[o.command]
	if !ok {
		return nil, usagef("unknown command %q: want workloads, certs, policies, connections, log or version", o.command)
	}
	o.section = section
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return o, o.validate(set)
}

func flagErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usagef("%s", err.Error())
}

func (o *options) validate(set map[string]bool) error {
	if o.output != "table" && o.output != "json" && o.output != "yaml" {
		return usagef("-o %q: want table, json or yaml", o.output)
	}
	if o.timeout <= 0 {
		return usagef("--timeout %s: must be positive", o.timeout)
	}
	if (set["level"] || set["access-log"]) && o.command != "log" {
		return usagef("--level and --access-log apply to the log command")
	}
	if o.command == "version" {
		return nil
	}
	if set["file"] {
		if o.command == "log" {
			return usagef("--file: the log command needs a daemon")
		}
		for _, f := range []string{"admin", "node", "pod"} {
			if set[f] {
				return usagef("give only one of --file, %s", flagName(f))
			}
		}
		if o.file == "" {
			return usagef("--file: empty path")
		}
		return nil
	}
	n := 0
	for _, f := range []string{"admin", "node", "pod"} {
		if set[f] {
			n++
		}
	}
	switch {
	case n == 0:
		return usagef("no target: give --admin URL, --node NAME, --pod NAME or --file PATH")
	case n > 1:
		return usagef("give only one of --admin, --node, --pod")
	}
	if set["admin"] {
		for _, f := range []string{"kubeconfig", "context", "namespace", "n", "daemonset", "admin-port"} {
			if set[f] {
				return usagef("%s applies to --node and --pod, not --admin", flagName(f))
			}
		}
		u, err := adminURL(o.admin)
		if err != nil {
			return usagef("--admin %q: %s", o.admin, err)
		}
		o.admin = u
		return nil
	}
	if o.adminPort < 1 || o.adminPort > 65535 {
		return usagef("--admin-port %d: want 1 to 65535", o.adminPort)
	}
	if !validName(o.namespace) {
		return usagef("--namespace %q: not a namespace name", o.namespace)
	}
	if o.daemonset != "" && !validName(o.daemonset) {
		return usagef("--daemonset %q: not a DaemonSet name", o.daemonset)
	}
	if set["node"] {
		if !validNodeName(o.node) {
			return usagef("--node %q: not a node name", o.node)
		}
		return nil
	}
	if set["daemonset"] {
		return usagef("--daemonset applies to --node, not --pod")
	}
	ns, name, ok := strings.Cut(o.pod, "/")
	if !ok {
		ns, name = o.namespace, o.pod
	} else if set["namespace"] || set["n"] {
		if ns != o.namespace {
			return usagef("--pod %q names namespace %q but --namespace is %q", o.pod, ns, o.namespace)
		}
	}
	if !validName(ns) || !validName(name) {
		return usagef("--pod %q: want NAME or NAMESPACE/NAME", o.pod)
	}
	o.namespace, o.pod = ns, name
	return nil
}

// flagName spells a flag as the usage does: -n, --namespace.
func flagName(f string) string {
	if len(f) == 1 {
		return "-" + f
	}
	return "--" + f
}

// adminURL accepts "http(s)://host:port" or "host:port" (http) and
// returns the base URL without a trailing slash.
func adminURL(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("scheme %q: want http or https", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", errors.New("no host")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return "", errors.New("want only scheme, host and port")
	}
	if p := u.Port(); p != "" {
		var n int
		if _, err := fmt.Sscanf(p, "%d", &n); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("port %q", p)
		}
	}
	return u.Scheme + "://" + u.Host, nil
}

// validName: a DNS-1123 label (namespaces, pods of a DaemonSet,
// DaemonSets), up to 253 characters with dots for generated names.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case (r == '-' || r == '.') && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// validNodeName: node names are DNS-1123 subdomains.
func validNodeName(s string) bool { return validName(s) }

// oneLine folds an error onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

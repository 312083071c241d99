package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is
// 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Validate checks every field and returns the first problem, in the order
// the chart passes the flags, as a one-line *UsageError wrapping ErrUsage;
// nil when the configuration can start a daemon. It reads CATokenFile and
// BundleFile (their content never appears in an error).
func (c Config) Validate() error {
	checks := []func() error{
		c.checkTrustDomain,
		c.checkTrustDomainAliases,
		c.checkCAAddress,
		func() error { return c.checkFile("ca-token-file", c.CATokenFile, checkToken) },
		c.checkAudience,
		func() error { return c.checkFile("bundle-file", c.BundleFile, checkBundle) },
		func() error { return c.checkName("node-name", c.NodeName, validation.IsDNS1123Subdomain) },
		c.checkSocket,
		func() error { return c.checkAbs("bpf-pin-dir", c.BPFPinDir) },
		func() error { return c.checkAbsOrEmpty("cgroup-root", c.CgroupRoot) },
		func() error { return c.checkAbsOrEmpty("host-netns", c.HostNetns) },
		func() error { return c.checkAbs("netns-dir", c.NetnsDir) },
		func() error { return c.checkAbsOrEmpty("cni-bin-dir", c.CNIBinDir) },
		func() error { return c.checkAbsOrEmpty("cni-conf-dir", c.CNIConfDir) },
		c.checkExcludeNamespaces,
		func() error { return c.checkName("root-namespace", c.RootNamespace, validation.IsDNS1123Label) },
		func() error { return c.checkSelector("mesh-namespace-selector", c.MeshNamespaceSelector) },
		func() error { return c.checkSelector("mesh-pod-opt-out", c.MeshPodOptOut) },
		c.checkLogLevel,
		func() error { return c.checkName("cluster-domain", c.ClusterDomain, validation.IsDNS1123Subdomain) },
		func() error { return c.checkName("cluster-id", c.ClusterID, validation.IsValidLabelValue) },
		func() error { return c.checkOneOf("access-log", c.AccessLog, "all", "failures", "off") },
		func() error { return c.checkOneOf("access-log-format", c.AccessLogFormat, "ambit", "ztunnel") },
		func() error { return c.checkListen("metrics-addr", c.MetricsAddr, false) },
		func() error { return c.checkListen("ready-addr", c.ReadyAddr, false) },
		func() error { return c.checkListen("admin-addr", c.AdminAddr, true) },
		c.checkConflicts,
		c.checkDownward,
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// source names what the operator set for a flag: its environment variable
// when Parse took the value from there, else --flag.
func (c Config) source(flagName string) string {
	if env, ok := c.origin[flagName]; ok {
		return env
	}
	return "--" + flagName
}

func (c Config) bad(flagName, value, reason string, err error) error {
	return &UsageError{Source: c.source(flagName), Value: value, Reason: reason, Err: err}
}

func (c Config) checkTrustDomain() error {
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return c.bad("trust-domain", c.TrustDomain, "not a SPIFFE trust domain: "+err.Error(), err)
	}
	if td.Name() != c.TrustDomain {
		return c.bad("trust-domain", c.TrustDomain, "want a bare trust domain name such as cluster.local, not a SPIFFE ID", nil)
	}
	return nil
}

func (c Config) checkTrustDomainAliases() error {
	for _, a := range strings.Split(c.TrustDomainAliases, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		td, err := spiffeid.TrustDomainFromString(a)
		if err != nil {
			return c.bad("trust-domain-aliases", c.TrustDomainAliases, fmt.Sprintf("%q is not a SPIFFE trust domain: %v", a, err), err)
		}
		if td.Name() != a {
			return c.bad("trust-domain-aliases", c.TrustDomainAliases, fmt.Sprintf("%q: want bare trust domain names such as old.local, not SPIFFE IDs", a), nil)
		}
		if a == c.TrustDomain {
			return c.bad("trust-domain-aliases", c.TrustDomainAliases, fmt.Sprintf("%q is the trust domain itself", a), nil)
		}
	}
	return nil
}

func (c Config) checkCAAddress() error {
	v := c.CAAddress
	if v == "" {
		return c.bad("ca-address", v, "required (the https URL of the CA)", nil)
	}
	u, err := url.Parse(v)
	switch {
	case err != nil:
		return c.bad("ca-address", v, "not a URL", err)
	case u.Scheme != "https":
		return c.bad("ca-address", v, "must be an https URL", nil)
	case u.Hostname() == "":
		return c.bad("ca-address", v, "has no host", nil)
	case u.User != nil:
		return c.bad("ca-address", v, "must not carry credentials (the daemon authenticates with its token)", nil)
	case u.RawQuery != "" || u.Fragment != "":
		return c.bad("ca-address", v, "must not have a query or fragment", nil)
	}
	if strings.HasSuffix(u.Host, ":") || u.Port() != "" {
		if reason := portProblem(u.Port()); reason != "" {
			return c.bad("ca-address", v, reason, nil)
		}
	}
	return nil
}

func (c Config) checkAudience() error {
	if c.CAAudience == "" {
		return c.bad("ca-audience", c.CAAudience, "required", nil)
	}
	if strings.ContainsFunc(c.CAAudience, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return c.bad("ca-audience", c.CAAudience, "must not contain spaces or control characters", nil)
	}
	return nil
}

func (c Config) checkName(flagName, v string, valid func(string) []string) error {
	if v == "" {
		hint := ""
		switch flagName {
		case "node-name":
			hint = " (set --node-name, " + EnvName(flagName) + " or " + EnvNodeName + ")"
		case "root-namespace":
			hint = " (set --root-namespace, " + EnvName(flagName) + " or " + EnvPodNamespace + ")"
		}
		return c.bad(flagName, v, "required"+hint, nil)
	}
	if errs := valid(v); len(errs) > 0 {
		return c.bad(flagName, v, "not a valid Kubernetes name: "+errs[0], nil)
	}
	return nil
}

func (c Config) checkSocket() error {
	if err := c.checkAbs("cni-socket", c.CNISocket); err != nil {
		return err
	}
	if len(c.CNISocket) > maxSocketPath {
		return c.bad("cni-socket", c.CNISocket, fmt.Sprintf("longer than the %d bytes a unix socket path may have", maxSocketPath), nil)
	}
	return nil
}

func (c Config) checkAbs(flagName, v string) error {
	if v == "" || !filepath.IsAbs(v) {
		return c.bad(flagName, v, "must be an absolute path", nil)
	}
	if strings.ContainsRune(v, 0) {
		return c.bad(flagName, v, "contains a NUL byte", nil)
	}
	return nil
}

func (c Config) checkAbsOrEmpty(flagName, v string) error {
	if v == "" {
		return nil
	}
	return c.checkAbs(flagName, v)
}

// checkExcludeNamespaces: every entry of the comma-separated list is a
// namespace name.
func (c Config) checkExcludeNamespaces() error {
	for _, ns := range c.ExcludeNamespaces() {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return c.bad("cni-exclude-namespaces", c.CNIExcludeNamespaces, fmt.Sprintf("%q is not a namespace name: %s", ns, errs[0]), nil)
		}
	}
	return nil
}

func (c Config) checkSelector(flagName, v string) error {
	if strings.TrimSpace(v) == "" {
		return c.bad(flagName, v, "must not be empty (an empty selector matches everything)", nil)
	}
	if _, err := labels.Parse(v); err != nil {
		return c.bad(flagName, v, "not a label selector: "+err.Error(), err)
	}
	return nil
}

func (c Config) checkLogLevel() error {
	if _, ok := logLevels[strings.ToLower(c.LogLevel)]; !ok {
		return c.bad("log-level", c.LogLevel, "unknown level (want debug, info, warn or error)", nil)
	}
	return nil
}

func (c Config) checkOneOf(flagName, v string, allowed ...string) error {
	if !slices.Contains(allowed, v) {
		return c.bad(flagName, v, "want one of "+strings.Join(allowed, ", "), nil)
	}
	return nil
}

// checkListen checks a host:port listen address: the port a number in
// 1-65535, the host empty (all addresses, unless loopbackOnly), an IP
// literal, or a DNS name; with loopbackOnly the host must be a loopback IP
// or "localhost".
func (c Config) checkListen(flagName, v string, loopbackOnly bool) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return c.bad(flagName, v, "want host:port", err)
	}
	if reason := portProblem(port); reason != "" {
		return c.bad(flagName, v, reason, nil)
	}
	ip := net.ParseIP(host)
	if loopbackOnly {
		if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			return c.bad(flagName, v, "must be a loopback address (127.0.0.1, ::1 or localhost)", nil)
		}
		return nil
	}
	if host != "" && ip == nil && len(validation.IsDNS1123Subdomain(strings.ToLower(host))) > 0 {
		return c.bad(flagName, v, "host is neither an IP address nor a DNS name", nil)
	}
	return nil
}

// portProblem returns why p is not a TCP port (1-65535), or "".
func portProblem(p string) string {
	if p == "" {
		return "missing port"
	}
	n, err := strconv.ParseUint(p, 10, 64)
	if err != nil {
		return "port is not a number"
	}
	if n < 1 || n > 65535 {
		return "port out of range"
	}
	return ""
}

// checkConflicts refuses two of the daemon's listeners on one port where
// their addresses overlap (same host, or either on all addresses).
func (c Config) checkConflicts() error {
	addrs := []struct{ flag, v string }{
		{"metrics-addr", c.MetricsAddr}, {"ready-addr", c.ReadyAddr}, {"admin-addr", c.AdminAddr},
	}
	for i := range addrs {
		hi, pi, _ := net.SplitHostPort(addrs[i].v)
		for j := range i {
			hj, pj, _ := net.SplitHostPort(addrs[j].v)
			if pi == pj && (hi == hj || wildcard(hi) || wildcard(hj)) {
				return c.bad(addrs[i].flag, addrs[i].v, "same port as "+c.source(addrs[j].flag)+" "+strconv.Quote(addrs[j].v), nil)
			}
		}
	}
	return nil
}

func wildcard(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

// checkDownward checks the daemon's own pod name and namespace when the
// downward API set them.
func (c Config) checkDownward() error {
	if c.PodName != "" && len(validation.IsDNS1123Subdomain(c.PodName)) > 0 {
		return &UsageError{Source: EnvPodName, Value: c.PodName, Reason: "not a valid pod name"}
	}
	if c.PodNamespace != "" && len(validation.IsDNS1123Label(c.PodNamespace)) > 0 {
		return &UsageError{Source: EnvPodNamespace, Value: c.PodNamespace, Reason: "not a valid namespace name"}
	}
	return nil
}

package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// ErrUsage is wrapped by every error Parse and Validate return for a bad
// flag, environment variable or value; the daemon exits 2 on it.
var ErrUsage = errors.New("invalid configuration")

// EnvPrefix prefixes the environment variable of every flag:
// --trust-domain is AMBIT_TRUST_DOMAIN.
const EnvPrefix = "AMBIT_"

// Downward-API variables the chart sets on the daemon container; used as
// fallbacks (NODE_NAME, POD_NAMESPACE) or read as they are (POD_NAME).
const (
	EnvNodeName     = "NODE_NAME"
	EnvPodName      = "POD_NAME"
	EnvPodNamespace = "POD_NAMESPACE"
)

// Defaults of the flags that have one (they match charts/ambit/values.yaml).
const (
	DefaultTrustDomain       = "cluster.local"
	DefaultCATokenFile       = "/var/run/secrets/ambit/ca-token/token"
	DefaultCAAudience        = "ambit-ca"
	DefaultBundleFile        = "/etc/ambit/bundle/ca.crt"
	DefaultCNISocket         = "/var/run/ambit/cni.sock"
	DefaultBPFPinDir         = "/sys/fs/bpf/ambit"
	DefaultNamespaceSelector = "ambit.dev/mesh=enabled"
	DefaultPodOptOut         = "ambit.dev/mesh=disabled"
	DefaultLogLevel          = "info"
	DefaultMetricsAddr       = ":15020"
	DefaultReadyAddr         = ":15021"
	DefaultAdminAddr         = "127.0.0.1:15000"
	DefaultNetnsDir          = "/var/run/netns"
	DefaultCNIBinDir         = "/host/cni/bin"
	DefaultCNIConfDir        = "/host/cni/net.d"
	DefaultClusterID         = "Kubernetes"
	DefaultClusterDomain     = "cluster.local"
	DefaultAccessLog         = "all"
	DefaultAccessLogFormat   = "ambit"
)

// Config is the node daemon's configuration. Every field has a flag (named
// in its comment) and an AMBIT_* environment variable.
type Config struct {
	// TrustDomain is the SPIFFE trust domain of every identity
	// (spiffe://<TrustDomain>/ns/<ns>/sa/<sa>), a bare name such as
	// "cluster.local". --trust-domain, optional, default cluster.local.
	TrustDomain string
	// TrustDomainAliases are other trust domains of the same mesh
	// (comma-separated bare names, e.g. the old one during a migration):
	// their identities verify against the roots of BundleFile, and policies
	// naming TrustDomain, an alias or cluster.local match peers of any of
	// them (Istio's trustDomainAliases). --trust-domain-aliases, optional.
	TrustDomainAliases string
	// CAAddress is the URL of the certificate authority, https only, e.g.
	// https://ambit-ca.ambit-system.svc:15012. --ca-address, required.
	CAAddress string
	// CATokenFile is the projected ServiceAccount token presented to the CA;
	// it must exist and be non-empty at start (kubelet rotates it, users
	// re-read it). --ca-token-file, optional, default the chart's mount path.
	CATokenFile string
	// CAAudience is the audience the CA expects in the token.
	// --ca-audience, optional, default ambit-ca.
	CAAudience string
	// BundleFile is the PEM trust bundle (roots) used to verify peers and
	// the CA; it must hold at least one certificate. --bundle-file,
	// optional, default the chart's mount path.
	BundleFile string
	// NodeName is the Kubernetes node this daemon serves. --node-name,
	// required; falls back to NODE_NAME (downward API) when empty.
	NodeName string
	// CNISocket is the unix socket path the ambit-cni plugin talks to.
	// --cni-socket, optional, default /var/run/ambit/cni.sock.
	CNISocket string
	// BPFPinDir is the bpffs directory where capture programs and maps are
	// pinned. --bpf-pin-dir, optional, default /sys/fs/bpf/ambit.
	BPFPinDir string
	// CgroupRoot is the cgroup v2 mount the outbound capture attaches to.
	// --cgroup-root, optional, default empty: the first cgroup2 mount in
	// /proc/self/mounts (the chart mounts the node's over the container's).
	CgroupRoot string
	// HostNetns is a file of the node's network namespace (the chart mounts
	// the node's /proc/1/ns/net there), where the host-side peers of pod
	// interfaces live; the daemon runs in its own network namespace.
	// --host-netns, optional, default empty: the daemon's own namespace
	// (right when it runs on the host network).
	HostNetns string
	// NetnsDir is the directory where the container runtime keeps pod
	// network namespaces (bind mounts); the daemon looks there for a running
	// pod enrolled without a CNI ADD (namespace labelled later, or pods that
	// predate the install). --netns-dir, optional, default /var/run/netns.
	NetnsDir string
	// CNIBinDir and CNIConfDir are the node's CNI directories as mounted in
	// the daemon's container; the daemon keeps ambit-cni installed there,
	// and removes it when it stops because its DaemonSet is gone (see
	// CNIKeepOnStop and docs/lifecycle.md). Empty disables that. --cni-bin-dir, --cni-conf-dir, optional, defaults
	// /host/cni/bin and /host/cni/net.d.
	CNIBinDir, CNIConfDir string
	// CNIExcludeNamespaces are the namespaces whose pods ambit-cni passes
	// through without asking the daemon (comma-separated), written into the
	// conflist entry the daemon keeps installed. --cni-exclude-namespaces,
	// optional.
	CNIExcludeNamespaces string
	// CNIKeepOnStop: never remove ambit-cni when the daemon stops, even
	// when its DaemonSet is gone. --cni-keep-on-stop, optional.
	CNIKeepOnStop bool
	// RootNamespace is the namespace whose policies apply mesh-wide.
	// --root-namespace, required; falls back to POD_NAMESPACE when empty.
	RootNamespace string
	// MeshNamespaceSelector is the label selector a namespace must match
	// for its pods to be enrolled. --mesh-namespace-selector, optional,
	// default ambit.dev/mesh=enabled; must not be empty.
	MeshNamespaceSelector string
	// MeshPodOptOut is the label selector that opts a pod out of an enrolled
	// namespace. --mesh-pod-opt-out, optional, default
	// ambit.dev/mesh=disabled; must not be empty.
	MeshPodOptOut string
	// LogLevel is debug, info, warn or error (any case). --log-level,
	// optional, default info.
	LogLevel string
	// MetricsAddr is the listen address (host:port, empty host = all
	// addresses) of /metrics. --metrics-addr, optional, default :15020.
	MetricsAddr string
	// ReadyAddr is the listen address of /healthz/ready. --ready-addr,
	// optional, default :15021.
	ReadyAddr string
	// AdminAddr is the listen address of the admin endpoint; its host must
	// be a loopback address or "localhost". --admin-addr, optional, default
	// 127.0.0.1:15000.
	AdminAddr string
	// ClusterID names this cluster in the istio_ metrics (source_cluster,
	// destination_cluster), as Istio's global.multiCluster.clusterName.
	// --cluster-id, optional, default Kubernetes.
	ClusterID string
	// ClusterDomain is the Kubernetes cluster domain of Service hostnames
	// (<svc>.<ns>.svc.<domain>). --cluster-domain, optional, default
	// cluster.local.
	ClusterDomain string
	// AccessLog says which connections get an access log line: all, failures
	// (failed, refused, denied, revoked or reset) or off; the admin
	// endpoint's /logging changes it at run time. --access-log, optional,
	// default all.
	AccessLog string
	// AccessLogFormat names the access log's fields: ambit (source_addr,
	// source_principal, ...) or ztunnel (src.addr, src.identity, ...).
	// --access-log-format, optional, default ambit.
	AccessLogFormat string
	// IstioPolicies also reads Istio's security.istio.io AuthorizationPolicy
	// and PeerAuthentication (when those CRDs exist) next to ambit's own.
	// --istio-policies, optional, default false.
	IstioPolicies bool
	// FIPS restricts TLS to FIPS-approved suites, curves and signatures.
	// --fips, optional, default false.
	FIPS bool
	// HBONEMaxHandshakes caps TLS handshakes in progress on the node's
	// HBONE listeners (tunnel.GuardConfig.MaxHandshakes). --hbone-max-handshakes,
	// optional; 0 takes the tunnel's default, negative disables the cap.
	HBONEMaxHandshakes int
	// HBONEMaxStreamsPerIdentity caps the HBONE streams one source identity
	// holds on the node (tunnel.GuardConfig.MaxStreamsPerIdentity).
	// --hbone-max-streams-per-identity, optional; 0 takes the tunnel's
	// default, negative disables the cap.
	HBONEMaxStreamsPerIdentity int

	// PodName is the daemon's own pod name, from POD_NAME (downward API;
	// no flag); optional, used to keep ambit itself out of the mesh.
	PodName string
	// PodNamespace is the daemon's own namespace, from POD_NAMESPACE (no
	// flag); optional.
	PodNamespace string

	// origin maps a flag name to where a non-flag value came from (an
	// environment variable), so errors name what the operator must fix.
	origin map[string]string
}

// Default returns the configuration with every default applied and the
// required fields (CAAddress, NodeName, RootNamespace) empty.
func Default() Config {
	return Config{
		TrustDomain:           DefaultTrustDomain,
		CATokenFile:           DefaultCATokenFile,
		CAAudience:            DefaultCAAudience,
		BundleFile:            DefaultBundleFile,
		CNISocket:             DefaultCNISocket,
		BPFPinDir:             DefaultBPFPinDir,
		MeshNamespaceSelector: DefaultNamespaceSelector,
		MeshPodOptOut:         DefaultPodOptOut,
		LogLevel:              DefaultLogLevel,
		MetricsAddr:           DefaultMetricsAddr,
		ReadyAddr:             DefaultReadyAddr,
		AdminAddr:             DefaultAdminAddr,
		NetnsDir:              DefaultNetnsDir,
		CNIBinDir:             DefaultCNIBinDir,
		CNIConfDir:            DefaultCNIConfDir,
		ClusterID:             DefaultClusterID,
		ClusterDomain:         DefaultClusterDomain,
		AccessLog:             DefaultAccessLog,
		AccessLogFormat:       DefaultAccessLogFormat,
	}
}

// UsageError is one bad input: Error() is one line, `--flag "value": reason`
// (or `AMBIT_FLAG "value": reason` when the value came from the
// environment). errors.Is(err, ErrUsage) holds for every UsageError.
type UsageError struct {
	// Source is what the operator set: "--metrics-addr", "AMBIT_METRICS_ADDR",
	// "NODE_NAME", or "" for errors that concern no single input.
	Source string
	// Value is the offending value, as given.
	Value string
	// Reason says what is wrong with it.
	Reason string
	// Err is the underlying error, if any (for errors.Is/As).
	Err error
	// noValue formats the error as `Source: Reason` (an unknown flag has no
	// value to quote).
	noValue bool
}

func (e *UsageError) Error() string {
	// The value is quoted (%q escapes newlines); source and reason are
	// folded onto one line whatever an underlying error says.
	if e.Source == "" {
		return oneLine(e.Reason)
	}
	if e.noValue {
		return oneLine(e.Source) + ": " + oneLine(e.Reason)
	}
	return fmt.Sprintf("%s %q: %s", oneLine(e.Source), e.Value, oneLine(e.Reason))
}

// Unwrap returns ErrUsage and the underlying error.
func (e *UsageError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrUsage}
	}
	return []error{ErrUsage, e.Err}
}

// oneLine folds every run of white space (newlines included) into one space.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// EnvName returns the environment variable of a flag: "trust-domain" ->
// "AMBIT_TRUST_DOMAIN".
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flagSet binds every flag to a field of c (pre-filled with defaults).
func flagSet(c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("ambit", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&c.TrustDomain, "trust-domain", c.TrustDomain, "SPIFFE trust domain of every identity")
	fs.StringVar(&c.TrustDomainAliases, "trust-domain-aliases", c.TrustDomainAliases, "other trust domains of this mesh (comma-separated): their identities verify against the bundle and match policies naming the trust domain")
	fs.StringVar(&c.CAAddress, "ca-address", c.CAAddress, "https URL of the certificate authority (required)")
	fs.StringVar(&c.CATokenFile, "ca-token-file", c.CATokenFile, "projected ServiceAccount token presented to the CA")
	fs.StringVar(&c.CAAudience, "ca-audience", c.CAAudience, "audience the CA expects in the token")
	fs.StringVar(&c.BundleFile, "bundle-file", c.BundleFile, "PEM trust bundle (roots)")
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "this node's name (required; empty: $NODE_NAME)")
	fs.StringVar(&c.CNISocket, "cni-socket", c.CNISocket, "unix socket the CNI plugin talks to")
	fs.StringVar(&c.BPFPinDir, "bpf-pin-dir", c.BPFPinDir, "bpffs directory for pinned programs and maps")
	fs.StringVar(&c.CgroupRoot, "cgroup-root", c.CgroupRoot, "cgroup v2 mount the outbound capture attaches to (empty: first cgroup2 mount)")
	fs.StringVar(&c.HostNetns, "host-netns", c.HostNetns, "file of the node's network namespace (empty: the daemon's own)")
	fs.StringVar(&c.NetnsDir, "netns-dir", c.NetnsDir, "directory of the runtime's pod network namespaces")
	fs.StringVar(&c.CNIBinDir, "cni-bin-dir", c.CNIBinDir, "node CNI bin directory as mounted here (empty: do not keep ambit-cni installed)")
	fs.StringVar(&c.CNIConfDir, "cni-conf-dir", c.CNIConfDir, "node CNI conf directory as mounted here")
	fs.StringVar(&c.CNIExcludeNamespaces, "cni-exclude-namespaces", c.CNIExcludeNamespaces, "namespaces ambit-cni passes through without the daemon (comma-separated)")
	fs.BoolVar(&c.CNIKeepOnStop, "cni-keep-on-stop", c.CNIKeepOnStop, "never remove ambit-cni from the node when the daemon stops (default: removed only when its DaemonSet is gone)")
	fs.StringVar(&c.RootNamespace, "root-namespace", c.RootNamespace, "namespace of mesh-wide policies (required; empty: $POD_NAMESPACE)")
	fs.StringVar(&c.MeshNamespaceSelector, "mesh-namespace-selector", c.MeshNamespaceSelector, "label selector of enrolled namespaces")
	fs.StringVar(&c.MeshPodOptOut, "mesh-pod-opt-out", c.MeshPodOptOut, "label selector of pods opted out")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "listen address of /metrics")
	fs.StringVar(&c.ReadyAddr, "ready-addr", c.ReadyAddr, "listen address of /healthz/ready")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "loopback listen address of the admin endpoint")
	fs.StringVar(&c.ClusterID, "cluster-id", c.ClusterID, "cluster name in the istio_ metrics (source_cluster, destination_cluster)")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", c.ClusterDomain, "Kubernetes cluster domain of Service hostnames")
	fs.StringVar(&c.AccessLog, "access-log", c.AccessLog, "connections logged: all, failures or off (changeable at run time on /logging)")
	fs.StringVar(&c.AccessLogFormat, "access-log-format", c.AccessLogFormat, "access log field names: ambit or ztunnel")
	fs.BoolVar(&c.IstioPolicies, "istio-policies", c.IstioPolicies, "also enforce Istio's security.istio.io policies when their CRDs exist")
	fs.BoolVar(&c.FIPS, "fips", c.FIPS, "restrict TLS to FIPS-approved algorithms")
	fs.IntVar(&c.HBONEMaxHandshakes, "hbone-max-handshakes", c.HBONEMaxHandshakes, "cap on TLS handshakes in progress on the HBONE listeners (0: built-in default 1024; negative: none)")
	fs.IntVar(&c.HBONEMaxStreamsPerIdentity, "hbone-max-streams-per-identity", c.HBONEMaxStreamsPerIdentity, "cap on HBONE streams per source identity on this node (0: built-in default 2048; negative: none)")
	return fs
}

// FlagNames returns the names of every flag Parse accepts, sorted.
func FlagNames() []string {
	var c Config
	var names []string
	flagSet(&c).VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

// PrintUsage writes every flag, its environment variable and its default to w
// (for -h).
func PrintUsage(w io.Writer) {
	c := Default()
	fs := flagSet(&c)
	_, _ = fmt.Fprintln(w, "Usage: ambit [flags]   (each flag also reads AMBIT_<FLAG>; flags win)")
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" {
			def = fmt.Sprintf(" (default %q)", f.DefValue)
		}
		_, _ = fmt.Fprintf(w, "  --%s  [%s]\n      %s%s\n", f.Name, EnvName(f.Name), f.Usage, def)
	})
}

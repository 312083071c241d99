package redirect

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
)

// Options configures a Manager.
type Options struct {
	// PinDir is where capture state is pinned in bpffs. Optional, default
	// /sys/fs/bpf/ambit. Must be on a bpf filesystem.
	PinDir string
	// StateDir holds one JSON file per enrolled pod (its netns path and
	// desired config) so a restarted daemon can find it. Optional, default
	// /run/ambit/pods.
	StateDir string
	// CgroupPath is the cgroup v2 root the outbound capture attaches to.
	// Optional, default: the first cgroup2 mount in /proc/self/mounts.
	CgroupPath string
	// Mark, MarkMask identify ambit's own sockets. Optional, default
	// DefaultMark/DefaultMarkMask.
	Mark, MarkMask uint32
	// MaxPods bounds the pods this node can enrol (slots in the node-wide
	// listeners sockmap). Optional, default 4096. Fixed once pinned.
	MaxPods uint32
	// HostNetns is the node's network namespace, where the host-side peers
	// of pod interfaces live (the host-side tc filters are attached there).
	// Optional: nil means the caller's own namespace, right for a daemon on
	// the host network. The chart runs the daemon in its own network
	// namespace and hands it the node's as a mounted namespace file. Not
	// closed by the Manager.
	HostNetns *os.File
	// Logger. Optional, default slog.Default().
	Logger *slog.Logger
}

// ErrNetnsNotFound: no namespace in the directory holds the address.
var ErrNetnsNotFound = errors.New("redirect: no pod network namespace holds the address")

// Found is a pod's network namespace found by FindPod: what Apply needs
// (without HostInterface or an open handle) plus the pod interface's
// gateways, which the CNI ADD would have reported as the probe sources.
type Found struct {
	NetnsPath string
	Interface string
	Addresses []netip.Addr
	Gateways  []netip.Addr
}

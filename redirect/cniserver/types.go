package cniserver

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/cnimsg"
)

// Pod is a pod announced by an ADD or CHECK, its network namespace
// verified.
type Pod struct {
	// Pod is the request as the runtime sent it (namespace, name, UID,
	// container ID, interface, addresses, gateways, netns path).
	cnimsg.Pod
	// Netns is the pod's namespace for capture: ID is the container ID;
	// Netns, the descriptor the plugin passed, is open only during the
	// call; HostInterface is the host side of the pod's interface, or
	// empty when not found.
	Netns redirect.PodNetns
	// Capture is the desired capture config: the pod's gateways as the
	// kubelet's probe sources, none when the host side is unknown (nothing
	// could tell a probe from a forgery).
	Capture redirect.Config
}

// Enroller decides and does the enrolment of the pods the server
// announces; the node daemon passes node/enrol's Enroller.
type Enroller interface {
	// Add enrols the pod when it belongs in the mesh and returns whether
	// it did; it returns only once the pod is fully served (the ADD is
	// acknowledged then), and an error fails the ADD, to be retried.
	Add(ctx context.Context, pod Pod) (enrolled bool, err error)
	// Check verifies an enrolled pod's capture (false: not in the mesh).
	Check(ctx context.Context, pod Pod) (enrolled bool, err error)
	// Del releases the pod of a sandbox; an unknown sandbox is not an
	// error (DEL is repeated, and may follow a failed ADD).
	Del(ctx context.Context, containerID string) error
}

// Options configures a Server.
type Options struct {
	// SocketPath is the unix socket to listen on. Required.
	SocketPath string
	// Enroller enrols and releases the announced pods. Required.
	Enroller Enroller
	// HostPeer finds the host-side interface of the pod's interface.
	// Optional: default redirect.HostPeer.
	HostPeer func(ns *os.File, ifname string) (string, error)
	// HostNetns is the node's network namespace (--host-netns); a request
	// offering it as a pod's is refused, as is one offering the daemon's
	// own. Optional: nil checks the daemon's own only.
	HostNetns *os.File
	// AllowUID is the only peer uid accepted. Optional: default 0 (root).
	AllowUID uint32
	// Timeout bounds the handling of one request. Optional: default 30 s.
	Timeout time.Duration
	// Logger. Optional: default slog.Default().
	Logger *slog.Logger
}

// Stats counts what the server did; read with Stats().
type Stats struct {
	Added, Deleted, Checked, NotEnrolled, Rejected, Failed int64
	// NodeNetns counts requests refused (and counted in Rejected) for
	// offering the node's or the daemon's own namespace as a pod's.
	NodeNetns int64
}

// ErrUnauthenticated: the peer is not the allowed uid.
var ErrUnauthenticated = errors.New("cniserver: peer not allowed")

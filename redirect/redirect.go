package redirect

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
)

// Sentinel errors callers branch on.
var (
	// ErrNotSupported: capture needs Linux.
	ErrNotSupported = errors.New("redirect: not supported on this platform")
	// ErrInvalid: a PodNetns or Config that cannot be applied.
	ErrInvalid = errors.New("redirect: invalid pod or config")
	// ErrUnknownPod: no capture state for that pod.
	ErrUnknownPod = errors.New("redirect: pod not enrolled")
	// ErrNoOriginalDst: the accepted connection has no recorded original
	// destination (not captured, or the entry was evicted); close it.
	ErrNoOriginalDst = errors.New("redirect: no original destination recorded")
	// ErrHandedOver: a newer daemon process has begun taking the node over
	// (BeginTakeover); this one captures no new pod. A CNI ADD failing with
	// it is retried by the runtime and reaches the successor.
	ErrHandedOver = errors.New("redirect: a newer daemon process is taking the node over")
)

// Default mark of ambit's own sockets (SO_MARK); capture ignores sockets
// whose mark matches under DefaultMarkMask.
const (
	DefaultMark     uint32 = 0x539
	DefaultMarkMask uint32 = 0xfff
)

// PodNetns identifies an enrolled pod's network namespace.
type PodNetns struct {
	// ID is a stable key for the pod (its UID or sandbox ID): letters,
	// digits, '-', '_', '.', at most 128. Required.
	ID string `json:"id"`
	// NetnsPath is a path to the namespace (e.g. /var/run/netns/cni-...);
	// kept so a restarted daemon can find it again. Required.
	NetnsPath string `json:"netnsPath"`
	// Netns is an open handle on the namespace; when nil NetnsPath is
	// opened. Optional. Not closed by this package.
	Netns *os.File `json:"-"`
	// Interface is the pod-side interface (e.g. eth0). Required.
	Interface string `json:"interface"`
	// HostInterface is the host-side peer of Interface (host netns).
	// Required when Config.ProbeSources is set. Optional otherwise.
	HostInterface string `json:"hostInterface,omitempty"`
	// Addresses are the pod's IPs. Required (at least one, at most 8).
	Addresses []netip.Addr `json:"addresses"`
}

// Config is the desired capture of one pod.
type Config struct {
	// ProbeSources are the host addresses the kubelet probes from (at most
	// 4). Inbound TCP from them reaches the app directly; forgeries of them
	// arriving from outside the host are dropped on HostInterface. Optional.
	ProbeSources []netip.Addr `json:"probeSources,omitempty"`
	// InboundExcludePorts and OutboundExcludePorts are never captured (at
	// most 8 each). Optional.
	InboundExcludePorts  []uint16 `json:"inboundExcludePorts,omitempty"`
	OutboundExcludePorts []uint16 `json:"outboundExcludePorts,omitempty"`
}

// Listeners are ambit's three listeners inside a pod netns, owned by the
// Manager (closed by Remove or Close). Accept from them; do not Close them.
type Listeners struct {
	Outbound net.Listener // 15001: captured outbound connects; see OriginalDst
	Inbound  net.Listener // 15006: inbound plaintext to any pod port
	HBONE    net.Listener // 15008: inbound HBONE
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

func (p PodNetns) validate(c Config) error {
	switch {
	case !idRE.MatchString(p.ID) || p.ID == "." || p.ID == "..":
		return fmt.Errorf("%w: pod ID %q", ErrInvalid, p.ID)
	case p.NetnsPath == "":
		return fmt.Errorf("%w: pod %s: no netns path", ErrInvalid, p.ID)
	case p.Interface == "":
		return fmt.Errorf("%w: pod %s: no interface", ErrInvalid, p.ID)
	case len(p.Addresses) == 0 || len(p.Addresses) > 8:
		return fmt.Errorf("%w: pod %s: %d addresses (1..8)", ErrInvalid, p.ID, len(p.Addresses))
	case len(c.ProbeSources) > 0 && p.HostInterface == "":
		return fmt.Errorf("%w: pod %s: probe sources need the host interface", ErrInvalid, p.ID)
	case len(c.ProbeSources) > 4:
		return fmt.Errorf("%w: pod %s: %d probe sources (max 4)", ErrInvalid, p.ID, len(c.ProbeSources))
	case len(c.InboundExcludePorts) > 8 || len(c.OutboundExcludePorts) > 8:
		return fmt.Errorf("%w: pod %s: too many excluded ports (max 8 each)", ErrInvalid, p.ID)
	case slices.Contains(c.InboundExcludePorts, 0) || slices.Contains(c.OutboundExcludePorts, 0):
		return fmt.Errorf("%w: pod %s: port 0 excluded", ErrInvalid, p.ID)
	}
	for _, a := range append(slices.Clone(p.Addresses), c.ProbeSources...) {
		if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() {
			return fmt.Errorf("%w: pod %s: address %v", ErrInvalid, p.ID, a)
		}
	}
	return nil
}

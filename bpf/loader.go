package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Well-known in-pod ports, as the programs use them.
const (
	PortOutbound = 15001
	PortInbound  = 15006
	PortHBONE    = 15008
)

// Slots of a pod's listeners sockmap.
const (
	SlotOutbound uint32 = 0
	SlotInbound  uint32 = 1
	SlotHBONE    uint32 = 2
)

// Indexes of a pod's stats map.
const (
	StatEgressSYNDrop   uint32 = 0
	StatSpoofDrop       uint32 = 1
	StatForgedProbeDrop uint32 = 2
	StatNoListenerDrop  uint32 = 3
	statMax                    = 4
	maxOwn                     = 8
	maxProbe                   = 4
	maxExclude                 = 8
)

// ErrTooMany is returned when a configuration list exceeds what the programs hold.
var ErrTooMany = errors.New("bpf: too many entries")

// Capture is the node-wide outbound capture: programs to attach at the
// cgroup v2 root and the maps they share. Close releases the file
// descriptors (attached and pinned objects stay in the kernel).
type Capture struct {
	Connect4, Connect6         *ebpf.Program
	GetPeername4, GetPeername6 *ebpf.Program
	GetSockname4, GetSockname6 *ebpf.Program
	SockOps                    *ebpf.Program
	// Pods holds enrolled netns cookies (uint64) -> PodCfg.
	Pods *ebpf.Map
	// PodAddrs holds enrolled netns cookies (uint64) -> PodAddr.
	PodAddrs *ebpf.Map
	// OrigDst holds original destinations keyed by the client end.
	OrigDst *ebpf.Map
	// SkOrig is the socket storage holding original destinations.
	SkOrig *ebpf.Map
	objs   captureObjects
}

// CaptureOptions configures LoadCapture.
type CaptureOptions struct {
	// Mark and MarkMask identify ambit's own sockets (SO_MARK). Required:
	// MarkMask must not be zero.
	Mark, MarkMask uint32
	// Maps replaces maps by name with pinned ones (pods, pod_addrs, origdst, sk_orig)
	// so a reloaded program shares state. Optional.
	Maps map[string]*ebpf.Map
}

// LoadCapture loads the node-wide programs (not attached).
func LoadCapture(opts CaptureOptions) (*Capture, error) {
	if opts.MarkMask == 0 {
		return nil, errors.New("bpf: capture needs a non-zero mark mask")
	}
	spec, err := loadCapture()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["ambit_mark"].Set(opts.Mark); err != nil {
		return nil, fmt.Errorf("bpf: set mark: %w", err)
	}
	if err := spec.Variables["ambit_mark_mask"].Set(opts.MarkMask); err != nil {
		return nil, fmt.Errorf("bpf: set mark mask: %w", err)
	}
	c := &Capture{}
	if err := spec.LoadAndAssign(&c.objs, &ebpf.CollectionOptions{MapReplacements: opts.Maps}); err != nil {
		return nil, fmt.Errorf("bpf: load capture: %w", err)
	}
	o := &c.objs
	c.Connect4, c.Connect6 = o.AmbitConnect4, o.AmbitConnect6
	c.GetPeername4, c.GetPeername6 = o.AmbitGetpeername4, o.AmbitGetpeername6
	c.GetSockname4, c.GetSockname6 = o.AmbitGetsockname4, o.AmbitGetsockname6
	c.SockOps = o.AmbitSockops
	c.Pods, c.PodAddrs, c.OrigDst, c.SkOrig = o.Pods, o.PodAddrs, o.Origdst, o.SkOrig
	return c, nil
}

// Close releases the file descriptors.
func (c *Capture) Close() error { return c.objs.Close() }

// PodCfg is the value of the capture's pods map.
type PodCfg = capturePodCfg

// NewPodCfg builds a pods map value.
func NewPodCfg(outExclude []uint16) (PodCfg, error) {
	var v PodCfg
	if len(outExclude) > maxExclude {
		return v, fmt.Errorf("%w: %d outbound excluded ports (max %d)", ErrTooMany, len(outExclude), maxExclude)
	}
	copy(v.OutExclude[:], outExclude)
	return v, nil
}

// PodAddr is the value of the capture's pod_addrs map.
type PodAddr = capturePodAddr

// NewPodAddr builds a pod_addrs value from the pod's addresses (the first
// IPv4 and the first IPv6; none of a family leaves it zero).
func NewPodAddr(addrs []netip.Addr) PodAddr {
	var v PodAddr
	for _, a := range addrs {
		switch {
		case a.Is4() && v.Ip4 == 0:
			v.Ip4 = addrWords(netip.AddrFrom16(a.As16()))[3]
		case a.Is6() && !a.Is4In6() && v.Ip6 == [4]uint32{}:
			v.Ip6 = addrWords(a)
		}
	}
	return v
}

// TupleKey is the key of the origdst map.
type TupleKey = captureTupleKey

// OrigDst is the value of the origdst map.
type OrigDst = captureOrigDst

// NewTupleKey builds the origdst key of a redirected connection's client end.
func NewTupleKey(netns uint64, client netip.AddrPort) TupleKey {
	var k TupleKey
	k.Netns = netns
	k.Addr.W = addrWords(client.Addr())
	k.Port = client.Port()
	return k
}

// AddrPort decodes an OrigDst into the address the app connected to.
func (o *OrigDst) AddrPort() netip.AddrPort {
	a := wordsAddr(o.Addr.W)
	if o.Family == 2 {
		a = a.Unmap()
	}
	p := o.Port>>8 | o.Port<<8 // network order in memory
	return netip.AddrPortFrom(a, p)
}

// addrWords encodes an address as the programs hold it: 16 bytes, IPv4 as
// v4-mapped, in network order.
func addrWords(a netip.Addr) [4]uint32 {
	b := a.As16()
	var w [4]uint32
	for i := range w {
		// Little-endian load of network-order bytes: the in-memory bytes stay
		// in network order, as the kernel writes them.
		w[i] = uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24
	}
	return w
}

func wordsAddr(w [4]uint32) netip.Addr {
	var b [16]byte
	for i, v := range w {
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	return netip.AddrFrom16(b)
}

//go:build !linux

package redirect

import (
	"context"
	"net"
	"net/netip"
	"os"
)

// Capture needs Linux (eBPF, netlink, network namespaces). On other
// platforms the package builds, so that the node daemon's packages build
// and vet everywhere, and every entry point returns ErrNotSupported.

// Manager is not available on this platform.
type Manager struct{}

// New returns ErrNotSupported.
func New(context.Context, Options) (*Manager, error) { return nil, ErrNotSupported }

func (*Manager) Close() error                                  { return ErrNotSupported }
func (*Manager) Uninstall(context.Context) error               { return ErrNotSupported }
func (*Manager) Apply(context.Context, PodNetns, Config) error { return ErrNotSupported }
func (*Manager) Check(context.Context, PodNetns, Config) error { return ErrNotSupported }
func (*Manager) Remove(context.Context, PodNetns) error        { return ErrNotSupported }
func (*Manager) Listeners(string) (Listeners, error)           { return Listeners{}, ErrNotSupported }
func (*Manager) Recorded() ([]PodNetns, error)                 { return nil, ErrNotSupported }
func (*Manager) Recover(context.Context) ([]PodNetns, error)   { return nil, ErrNotSupported }
func (*Manager) BeginTakeover() ([]PodNetns, error)            { return nil, ErrNotSupported }
func (*Manager) State() (string, error)                        { return "", ErrNotSupported }
func (*Manager) OriginalDst(net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, ErrNotSupported
}
func (*Manager) Dial(context.Context, string, string, string) (net.Conn, error) {
	return nil, ErrNotSupported
}

// FindPod returns ErrNotSupported.
func FindPod(string, netip.Addr) (Found, error) { return Found{}, ErrNotSupported }

// HostPeer returns ErrNotSupported.
func HostPeer(*os.File, string) (string, error) { return "", ErrNotSupported }

// HostPeerIn returns ErrNotSupported.
func HostPeerIn(_, _ *os.File, _ string) (string, error) { return "", ErrNotSupported }

// InNetns returns ErrNotSupported.
func InNetns(*os.File, func() error) error { return ErrNotSupported }

// CheckPodNetns returns ErrNotSupported.
func CheckPodNetns(_, _ *os.File) error { return ErrNotSupported }

package redirect

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/ambit-mesh/ambit/bpf"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// OriginalDst returns the destination the app connected to, for a
// connection accepted on an Outbound listener, and forgets it (each
// captured connection is read once). ErrNoOriginalDst means the
// connection was not captured or its record is gone: close it.
func (m *Manager) OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w: %T is not a socket", ErrNoOriginalDst, c)
	}
	cookie, err := sockopt(sc, unix.SO_NETNS_COOKIE)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("redirect: netns cookie of accepted socket: %w", err)
	}
	ra, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w: remote %v", ErrNoOriginalDst, c.RemoteAddr())
	}
	key := bpf.NewTupleKey(cookie, ra.AddrPort())
	var v bpf.OrigDst
	if err := m.origdst.LookupAndDelete(&key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return netip.AddrPort{}, fmt.Errorf("%w: client %v", ErrNoOriginalDst, ra)
		}
		return netip.AddrPort{}, fmt.Errorf("redirect: origdst lookup: %w", err)
	}
	return v.AddrPort(), nil
}

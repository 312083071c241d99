package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FindPod looks for the network namespace of a running pod by its address:
// every namespace file in dir (the runtime's, e.g. /var/run/netns) is
// opened and the interface holding addr is looked up with netlink. It is
// how a pod that was never announced by ambit-cni (its namespace was
// labelled while it ran, or it predates the install) is enrolled without a
// restart. The cost is one netlink dump per namespace in dir, paid only for
// such pods.
func FindPod(dir string, addr netip.Addr) (Found, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return Found{}, fmt.Errorf("redirect: netns directory: %w", err)
	}
	addr = addr.Unmap()
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, ok, err := inspectNetns(p, addr)
		if err != nil {
			continue // a namespace being torn down, or not a namespace at all
		}
		if ok {
			return f, nil
		}
	}
	return Found{}, fmt.Errorf("%w: %s in %s", ErrNetnsNotFound, addr, dir)
}

// inspectNetns reports whether the namespace at path has addr on one of its
// interfaces, and if so which interface, all its addresses and gateways.
func inspectNetns(path string, addr netip.Addr) (Found, bool, error) {
	ns, err := os.Open(path)
	if err != nil {
		return Found{}, false, err
	}
	defer ns.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(ns.Fd()), &st); err != nil || st.Type != unix.NSFS_MAGIC {
		return Found{}, false, errors.New("not a namespace file")
	}
	h, err := nlHandle(ns)
	if err != nil {
		return Found{}, false, err
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return Found{}, false, err
	}
	ifindex := 0
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			ifindex = a.LinkIndex
			break
		}
	}
	if ifindex == 0 {
		return Found{}, false, nil
	}
	link, err := h.LinkByIndex(ifindex)
	if err != nil {
		return Found{}, false, err
	}
	f := Found{NetnsPath: path, Interface: link.Attrs().Name}
	for _, a := range addrs {
		if a.LinkIndex != ifindex {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.IsLinkLocalUnicast() {
			f.Addresses = append(f.Addresses, ip.Unmap())
		}
	}
	routes, err := h.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return Found{}, false, err
	}
	for _, r := range routes {
		if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil && !slices.Contains(f.Gateways, gw.Unmap()) {
			f.Gateways = append(f.Gateways, gw.Unmap())
		}
	}
	return f, true, nil
}

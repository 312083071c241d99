package redirect

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestFindPod: a running pod's namespace is found by its address among the
// namespace files of a directory, with its interface, addresses and
// gateway; an address no namespace holds is ErrNetnsNotFound.
func TestFindPod(t *testing.T) {
	l := newLab(t)
	a, b := l.pod("finda", 2), l.pod("findb", 3)
	h, err := netlink.NewHandleAt(netns.NsHandle(a.ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: l.gw4.AsSlice(), Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}); err != nil {
		t.Fatal(err)
	}
	// A regular file in the directory is skipped, not an error.
	if err := os.WriteFile(l.dir+"/not-a-netns", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	f, err := FindPod(l.dir, a.v4)
	if err != nil {
		t.Fatal(err)
	}
	if f.NetnsPath != a.path || f.Interface != "eth0" || !slices.Contains(f.Addresses, a.v4) || !slices.Contains(f.Addresses, a.v6) {
		t.Errorf("FindPod(a) = %+v, want %s eth0 with %s and %s", f, a.path, a.v4, a.v6)
	}
	if !slices.Equal(f.Gateways, []netip.Addr{l.gw4}) {
		t.Errorf("gateways %v, want [%s]", f.Gateways, l.gw4)
	}
	if f, err := FindPod(l.dir, b.v6); err != nil || f.NetnsPath != b.path {
		t.Errorf("FindPod(b by IPv6) = %+v, %v", f, err)
	}
	if _, err := FindPod(l.dir, netip.MustParseAddr("198.18.250.250")); !errors.Is(err, ErrNetnsNotFound) {
		t.Errorf("unknown address: %v, want ErrNetnsNotFound", err)
	}
	if _, err := FindPod(l.dir+"/missing", a.v4); err == nil {
		t.Error("missing directory: no error")
	}
}

// TestHostPeerIn: the host-side peer is found through an explicit handle on
// the host namespace even from another namespace, as the daemon does when it
// does not run on the host network.
func TestHostPeerIn(t *testing.T) {
	l := newLab(t)
	a := l.pod("peera", 2)
	other, _ := newNetns(t, l.dir, "elsewhere")
	host, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	var got string
	var inOther error
	if err := inNetns(other, func() error {
		got, err = HostPeerIn(host, a.ns, "eth0")
		_, inOther = HostPeerIn(nil, a.ns, "eth0")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err != nil || got != a.hostIf {
		t.Errorf("HostPeerIn(host) = %q, %v; want %s", got, err, a.hostIf)
	}
	if inOther == nil {
		t.Error("HostPeerIn(nil) from a namespace without the peer found one")
	}
	if got, err := HostPeer(a.ns, "lo"); err == nil {
		t.Errorf("HostPeer(lo) = %q, want an error (not a veth)", got)
	}
}

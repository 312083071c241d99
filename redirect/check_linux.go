package redirect

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ambit-mesh/ambit/bpf"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// ErrDrift is wrapped by Check when the applied capture differs from the
// desired one.
var ErrDrift = fmt.Errorf("redirect: capture differs from desired")

// Check verifies, without changing anything, that pod is captured as
// desired: recorded state equal, pins present, listeners held here.
func (m *Manager) Check(_ context.Context, pod PodNetns, desired Config) error {
	if err := pod.validate(desired); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.readState(pod.ID)
	if err != nil {
		return err
	}
	if st == nil {
		return fmt.Errorf("%w: %s", ErrUnknownPod, pod.ID)
	}
	ns := pod.Netns
	if ns == nil {
		f, err := os.Open(pod.NetnsPath)
		if err != nil {
			return fmt.Errorf("redirect: %w", err)
		}
		defer f.Close()
		ns = f
	}
	cookie, err := netnsCookie(ns)
	if err != nil {
		return err
	}
	want := &podState{Pod: pod, Config: desired, Cookie: cookie, Slot: st.Slot, Programs: bpf.PodObjectHash()}
	want.Pod.Netns = nil
	if !st.sameAs(want) {
		return fmt.Errorf("%w: %s: recorded state differs", ErrDrift, pod.ID)
	}
	for _, pin := range []string{pinLookup, pinStats} {
		if _, err := os.Stat(filepath.Join(m.podDir(pod.ID), pin)); err != nil {
			return fmt.Errorf("%w: %s: %s missing", ErrDrift, pod.ID, pin)
		}
	}
	h, err := nlHandle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	filters := []struct {
		h      *netlink.Handle
		ifname string
		f      tcFilter
	}{{h, pod.Interface, tcPodEgress}}
	if pod.HostInterface != "" {
		hh, err := nlHandle(m.opts.HostNetns)
		if err != nil {
			return err
		}
		defer hh.Close()
		filters = append(filters, struct {
			h      *netlink.Handle
			ifname string
			f      tcFilter
		}{hh, pod.HostInterface, tcHostEgress})
	} else {
		filters = append(filters, struct {
			h      *netlink.Handle
			ifname string
			f      tcFilter
		}{h, pod.Interface, tcPodIngress})
	}
	for _, f := range filters {
		if bf, err := findFilter(f.h, f.ifname, f.f); err != nil || bf == nil {
			return fmt.Errorf("%w: %s: %s missing on %s", ErrDrift, pod.ID, f.f.name, f.ifname)
		}
	}
	if r := m.local[pod.ID]; r == nil || r.listeners[0] == nil {
		return fmt.Errorf("%w: %s: no listeners in this process", ErrDrift, pod.ID)
	}
	return nil
}

// HostPeer returns the name of the host-side peer (in the caller's
// namespace) of the veth ifname inside ns.
func HostPeer(ns *os.File, ifname string) (string, error) { return HostPeerIn(nil, ns, ifname) }

// HostPeerIn is HostPeer for a host-side namespace given as a handle (nil:
// the caller's own), for a daemon that does not run on the host network.
func HostPeerIn(host, ns *os.File, ifname string) (string, error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()))
	if err != nil {
		return "", fmt.Errorf("redirect: netlink handle: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return "", fmt.Errorf("redirect: %s: %w", ifname, err)
	}
	if _, ok := l.(*netlink.Veth); !ok || l.Attrs().ParentIndex == 0 {
		return "", fmt.Errorf("redirect: %s is a %s, not a veth", ifname, l.Type())
	}
	hh, err := nlHandle(host)
	if err != nil {
		return "", err
	}
	defer hh.Close()
	hl, err := hh.LinkByIndex(l.Attrs().ParentIndex)
	if err != nil {
		return "", fmt.Errorf("redirect: host peer of %s: %w", ifname, err)
	}
	if hl.Attrs().ParentIndex != l.Attrs().Index {
		return "", fmt.Errorf("redirect: host interface %s is not the peer of %s", hl.Attrs().Name, ifname)
	}
	return hl.Attrs().Name, nil
}

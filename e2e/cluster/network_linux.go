//go:build linux

package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The run's network, all of it removed by teardown:
//
//	host netns                         node netns ambit-e2e-n<i>
//	bridge ambite2e0  172.31.250.1/24 ─ veth ambite2e-n<i> ── eth0 172.31.250.(10+i)/24
//	  kube-apiserver listens here                             default via 172.31.250.1
//	  route <podCIDR of node i> via node i                    cni0: the node's pod bridge
//	                                                          route <podCIDR of node j> via node j
//
// Pod-to-pod traffic between nodes is routed (no NAT, no overlay), so a server
// sees the real pod address of its client.
const (
	bridgeName  = "ambite2e0"
	netnsPrefix = "ambit-e2e-n"
	vethPrefix  = "ambite2e-n"
)

func netnsName(i int) string { return fmt.Sprintf("%s%d", netnsPrefix, i) }

// netnsPath is the file of a named network namespace, for nsenter.
func netnsPath(name string) string { return filepath.Join("/run/netns", name) }

// hostNet is the host side of the run's network.
type hostNet struct {
	cidr   *net.IPNet
	hostIP net.IP
}

func nthIP(n *net.IPNet, i int) net.IP {
	ip := n.IP.To4()
	out := make(net.IP, 4)
	copy(out, ip)
	v := uint32(out[0])<<24 | uint32(out[1])<<16 | uint32(out[2])<<8 | uint32(out[3])
	v += uint32(i)
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4()
}

func prefixLen(n *net.IPNet) int { l, _ := n.Mask.Size(); return l }

func setupHostNet(ctx context.Context, cidr *net.IPNet) (*hostNet, error) {
	h := &hostNet{cidr: cidr, hostIP: nthIP(cidr, 1)}
	steps := [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("%s/%d", h.hostIP, prefixLen(cidr)), "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return nil, fmt.Errorf("host network: %w", err)
		}
	}
	return h, nil
}

// setupNodeNet creates node i's network namespace wired to the host bridge.
func setupNodeNet(ctx context.Context, h *hostNet, i int, nodeIP net.IP) error {
	ns := netnsName(i)
	veth := fmt.Sprintf("%s%d", vethPrefix, i)
	steps := [][]string{
		{"netns", "add", ns},
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", veth, "master", bridgeName, "up"},
		{"-n", ns, "addr", "add", fmt.Sprintf("%s/%d", nodeIP, prefixLen(h.cidr)), "dev", "eth0"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", "default", "via", h.hostIP.String()},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return fmt.Errorf("node %d network: %w", i, err)
		}
	}
	// A node forwards between its pod bridge and eth0; bridged pod traffic
	// goes through the node's iptables (kube-proxy's Service rules) as on a
	// real node. These sysctls are per network namespace.
	sysctls := map[string]string{
		"net/ipv4/ip_forward":                 "1",
		"net/bridge/bridge-nf-call-iptables":  "1",
		"net/bridge/bridge-nf-call-ip6tables": "1",
	}
	for k, v := range sysctls {
		script := fmt.Sprintf("test ! -e /proc/sys/%[1]s || echo %[2]s > /proc/sys/%[1]s", k, v)
		if _, err := run(ctx, "nsenter", "--net="+netnsPath(ns), "--", "sh", "-c", script); err != nil {
			return fmt.Errorf("node %d sysctl %s: %w", i, k, err)
		}
	}
	return nil
}

// addPodRoute routes a node's pod CIDR via that node's address, in the host
// and in every other node's namespace.
func addPodRoute(ctx context.Context, nodes []*Node, owner *Node) error {
	cidr := owner.PodCIDR.String()
	if _, err := run(ctx, "ip", "route", "replace", cidr, "via", owner.IP.String(), "dev", bridgeName); err != nil {
		return err
	}
	for _, n := range nodes {
		if n == owner {
			continue
		}
		if _, err := run(ctx, "ip", "-n", n.netnsName, "route", "replace", cidr, "via", owner.IP.String(), "dev", "eth0"); err != nil {
			return err
		}
	}
	return nil
}

// teardownNet removes what setupHostNet and setupNodeNet created; missing
// pieces are not errors (teardown also runs after a crash).
func teardownNet(ctx context.Context) error {
	var errs []string
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), netnsPrefix) {
			if _, err := run(ctx, "ip", "netns", "del", e.Name()); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	// A node namespace kept alive by something other than its name (a
	// crashed run's pinned mount namespace) keeps its veth pair, whose host
	// end would block the next run's; deleting one end deletes both.
	// The namespace deletions above remove their veth pairs asynchronously:
	// give them a moment, delete what remains, and wait until it is gone.
	waitNoVeths(ctx, 2*time.Second)
	for _, l := range strayVeths() {
		if _, err := run(ctx, "ip", "link", "del", l); err != nil && linkExists(l) {
			errs = append(errs, err.Error())
		}
	}
	waitNoVeths(ctx, 2*time.Second)
	if _, err := os.Stat(filepath.Join("/sys/class/net", bridgeName)); err == nil {
		if _, err := run(ctx, "ip", "link", "del", bridgeName); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("network teardown: %s", strings.Join(errs, "; "))
	}
	return nil
}

// strayVeths lists the host ends of node veth pairs that still exist.
func strayVeths() []string {
	entries, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), vethPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

func waitNoVeths(ctx context.Context, max time.Duration) {
	deadline := time.Now().Add(max)
	for len(strayVeths()) > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

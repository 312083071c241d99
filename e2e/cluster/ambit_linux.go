//go:build linux

package cluster

import (
	"bufio"
	"errors"
	"os"
	"strings"
)

// What ambit's node daemon needs on this harness's emulated nodes, where a
// real node needs nothing: the same values for the tests, the benchmark and
// the demo.
const (
	// AmbitSocketDir is the daemon's CNI socket directory, private to each
	// node (Options.NodePrivateDirs): two daemons on one machine would
	// otherwise share one socket.
	AmbitSocketDir = "/var/run/ambit"
	// AmbitNodeNetnsFile is where each node shows its network namespace
	// (Options.NodeNetnsFile); a real node's is /proc/1/ns/net.
	AmbitNodeNetnsFile = "/var/lib/ambit-e2e-node/netns"
	// ContainerdNetnsDir is where the nodes' containerd keeps pod network
	// namespaces (netns_mounts_under_state_dir in its configuration).
	ContainerdNetnsDir = "/run/containerd/io.containerd.grpc.v1.cri/netns"
)

// ForAmbit adds to o what the daemon needs on these nodes (a private socket
// directory, the node netns file).
func ForAmbit(o Options) Options {
	o.NodePrivateDirs = append(append([]string(nil), o.NodePrivateDirs...), AmbitSocketDir)
	o.NodeNetnsFile = AmbitNodeNetnsFile
	return o
}

// AmbitChartValues are the `helm --set` arguments that point charts/ambit at
// these nodes: the machine's cgroup v2 mount (a hybrid host has it below
// /sys/fs/cgroup), containerd's netns directory and the node netns file.
func AmbitChartValues() ([]string, error) {
	cg, err := Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	return []string{"--set", "daemon.cgroupRoot=" + cg, "--set", "daemon.cgroupV2Root=" + cg,
		"--set", "daemon.netnsDir=" + ContainerdNetnsDir, "--set", "daemon.hostNetns=" + AmbitNodeNetnsFile}, nil
}

// Cgroup2Mount is the machine's cgroup v2 mount point.
func Cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fs := strings.Fields(s.Text()); len(fs) > 2 && fs[2] == "cgroup2" {
			return fs[1], nil
		}
	}
	return "", errors.New("no cgroup2 mount on this machine")
}

//go:build linux

package cluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Leftovers lists what of the cluster still exists on the machine: processes,
// cgroups, network namespaces, the bridge, mounts, the run directory and the
// mount points the run created. After Stop it must be empty; tests assert it.
// After Stop it reports what was left when Stop finished, taken while Stop
// still held the machine lock: afterwards the next run (another test
// package's) may already be creating the same names.
func (c *Cluster) Leftovers() []string {
	c.mu.Lock()
	stopped, left := c.stopped, c.leftAtStop
	c.mu.Unlock()
	if stopped {
		return left
	}
	return c.leftoversNow()
}

func (c *Cluster) leftoversNow() []string {
	out := MachineLeftovers(c.opts.BaseDir)
	for _, d := range c.state.CreatedDirs {
		if _, err := os.Stat(d); err == nil {
			out = append(out, "mount point "+d)
		}
	}
	return out
}

// MachineLeftovers lists what any harness run under base left on the
// machine: processes and cgroups named ambit-e2e-*, the harness's network
// namespaces and bridge, mounts under base, and run directories. It is empty
// when no cluster is running and every run was stopped or reaped.
func MachineLeftovers(base string) []string {
	var out []string
	if all, track, err := cgroupHierarchies(); err == nil {
		for _, h := range all {
			matches, _ := filepath.Glob(filepath.Join(h, "ambit-e2e-*"))
			for _, m := range matches {
				out = append(out, "cgroup "+m)
				if h == track {
					if pids := pidsBelow(m); len(pids) > 0 {
						out = append(out, fmt.Sprintf("processes %v in %s", pids, m))
					}
				}
			}
		}
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), netnsPrefix) {
			out = append(out, "network namespace "+e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", bridgeName)); err == nil {
		out = append(out, "link "+bridgeName)
	}
	for _, l := range strayVeths() {
		out = append(out, "link "+l)
	}
	for _, r := range foreignRuns(base) {
		out = append(out, "run of another checkout "+r)
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) > 4 && strings.HasPrefix(unescapeMount(fields[4]), base+"/") {
				out = append(out, "mount "+fields[4])
			}
		}
		f.Close()
	}
	runs, _ := filepath.Glob(filepath.Join(base, "run-*"))
	for _, r := range runs {
		out = append(out, "directory "+r)
	}
	return out
}

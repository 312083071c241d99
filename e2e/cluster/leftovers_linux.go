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
func (c *Cluster) Leftovers() []string {
	var out []string
	if c.cg != nil {
		if pids := c.cg.pids(); len(pids) > 0 {
			out = append(out, fmt.Sprintf("processes %v", pids))
		}
		for _, h := range c.cg.hierarchies {
			if _, err := os.Stat(filepath.Join(h, c.cg.name)); err == nil {
				out = append(out, "cgroup "+filepath.Join(h, c.cg.name))
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
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) > 4 && c.WorkDir != "" && strings.HasPrefix(unescapeMount(fields[4]), c.WorkDir) {
				out = append(out, "mount "+fields[4])
			}
		}
		f.Close()
	}
	if c.WorkDir != "" {
		if _, err := os.Stat(c.WorkDir); err == nil {
			out = append(out, "directory "+c.WorkDir)
		}
	}
	for _, d := range c.state.CreatedDirs {
		if _, err := os.Stat(d); err == nil {
			out = append(out, "mount point "+d)
		}
	}
	return out
}

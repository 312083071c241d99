//go:build linux

package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PodProcesses returns the host PIDs of the processes named comm (as in
// /proc/PID/comm) running in the pod with the given UID, found by the pod's
// cgroup (the kubelet names it after the UID, with dashes or, under the
// systemd driver, underscores). A test kills a container's process with it.
func PodProcesses(podUID, comm string) ([]int, error) {
	if podUID == "" || comm == "" {
		return nil, fmt.Errorf("cluster: PodProcesses needs a pod UID and a command name")
	}
	keys := []string{"pod" + podUID, "pod" + strings.ReplaceAll(podUID, "-", "_")}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		b, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || strings.TrimSpace(string(b)) != comm {
			continue
		}
		cg, err := os.ReadFile(filepath.Join(dir, "cgroup"))
		if err != nil {
			continue
		}
		for _, k := range keys {
			if strings.Contains(string(cg), k) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids, nil
}

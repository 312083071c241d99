//go:build linux

package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroups is the run's cgroup subtree, /<name> in every mounted hierarchy.
//
// Every component joins <track>/<name>/<component> (track is the v1 pids
// hierarchy, or the unified one on a cgroup v2 host) and each kubelet's
// cgroupRoot is /<name>/<node>, so every process of the run, including the
// container shims that containerd daemonises and the containers themselves,
// lives below /<name>. Killing everything there is the crash-proof way to
// leave nothing running.
type cgroups struct {
	name        string   // e.g. ambit-e2e-1a2b3c
	hierarchies []string // mount points of every cgroup hierarchy
	track       string   // the hierarchy used to find processes
}

// cgroupHierarchies lists the mount points of the mounted cgroup hierarchies
// and picks the one used for tracking processes.
func cgroupHierarchies() (all []string, track string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	var unified string
	s := bufio.NewScanner(f)
	for s.Scan() {
		// mountinfo: id parent maj:min root mountpoint opts ... - fstype source superopts
		fields := strings.Fields(s.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 > len(fields) {
			continue
		}
		fstype, mnt, super := fields[sep+1], fields[4], fields[sep+3]
		switch fstype {
		case "cgroup":
			all = append(all, mnt)
			for _, o := range strings.Split(super, ",") {
				if o == "pids" {
					track = mnt
				}
			}
		case "cgroup2":
			all = append(all, mnt)
			unified = mnt
		}
	}
	if track == "" {
		track = unified
	}
	if track == "" {
		return nil, "", errors.New("no cgroup hierarchy with the pids controller is mounted")
	}
	return all, track, s.Err()
}

func newCgroups(name string) (*cgroups, error) {
	all, track, err := cgroupHierarchies()
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	return &cgroups{name: name, hierarchies: all, track: track}, nil
}

// procDir creates the tracking cgroup of a component and returns its
// cgroup.procs file.
func (c *cgroups) procDir(component string) (string, error) {
	dir := filepath.Join(c.track, c.name, "proc-"+component)
	if err := mkdirCgroup(c.track, dir); err != nil {
		return "", err
	}
	return filepath.Join(dir, "cgroup.procs"), nil
}

// ensureRoot creates /<name>/<sub> in every hierarchy (a kubelet's cgroupRoot
// must exist before it starts).
func (c *cgroups) ensureRoot(sub string) error {
	for _, h := range c.hierarchies {
		if err := mkdirCgroup(h, filepath.Join(h, c.name, sub)); err != nil {
			return err
		}
	}
	return nil
}

// mkdirCgroup creates dir and its parents below hierarchy h. In a v1 cpuset
// hierarchy a new cgroup starts with no CPUs or memory nodes, so those are
// copied from the parent.
func mkdirCgroup(h, dir string) error {
	rel, err := filepath.Rel(h, dir)
	if err != nil {
		return err
	}
	cur := h
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		parent := cur
		cur = filepath.Join(cur, part)
		if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cgroup mkdir %s: %w", cur, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			b, err := os.ReadFile(filepath.Join(parent, f))
			if err != nil {
				continue // not a cpuset hierarchy
			}
			if cb, _ := os.ReadFile(filepath.Join(cur, f)); strings.TrimSpace(string(cb)) != "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(cur, f), b, 0o644); err != nil {
				return fmt.Errorf("cgroup %s/%s: %w", cur, f, err)
			}
		}
	}
	return nil
}

// pids lists every process below /<name> in the tracking hierarchy.
func (c *cgroups) pids() []int {
	return pidsBelow(filepath.Join(c.track, c.name))
}

func pidsBelow(root string) []int {
	var out []int
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, l := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(l); err == nil {
				out = append(out, pid)
			}
		}
		return nil
	})
	return out
}

// killAll SIGKILLs every process of the run until none is left (or ctx
// ends), then removes the run's cgroups from every hierarchy.
func (c *cgroups) killAll(ctx context.Context) error {
	for {
		pids := c.pids()
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroups: %d processes still alive: %w", len(c.pids()), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	var errs []error
	for _, h := range c.hierarchies {
		if err := rmdirTree(ctx, filepath.Join(h, c.name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rmdirTree removes a cgroup directory tree bottom-up, retrying briefly while
// the kernel finishes tearing down exited tasks.
func rmdirTree(ctx context.Context, root string) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		for {
			err := syscall.Rmdir(d)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) {
				return fmt.Errorf("cgroup rmdir %s: %w", d, err)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("cgroup rmdir %s: %w", d, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

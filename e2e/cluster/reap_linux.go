//go:build linux

package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// runState records what a run created, in <run dir>/state.json, so that a
// later Start (or Reap) can remove it after a crash.
type runState struct {
	Owner       int      `json:"owner"`        // pid of the process that started the run
	Dir         string   `json:"dir"`          // the run directory
	Cgroup      string   `json:"cgroup"`       // cgroup name below every hierarchy's root
	NetNS       []string `json:"netns"`        // named network namespaces
	MountNS     []string `json:"mountns"`      // mount namespace files
	CreatedDirs []string `json:"created_dirs"` // host directories made as mount points, deepest first
}

func (c *Cluster) saveState() error {
	b, err := json.MarshalIndent(c.state, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.WorkDir, ".state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.WorkDir, "state.json"))
}

// machineLock is the harness lock file. It lives outside any checkout:
// clusters started from two clones would share the fixed bridge, namespaces
// and addresses, so they must wait for each other too.
const machineLock = "/run/ambit-e2e.lock"

// lockMachine takes the machine-wide harness lock (one cluster at a time:
// the bridge, namespaces and addresses are fixed), waiting for ctx.
func lockMachine(ctx context.Context, _ string) (func(), error) {
	f, err := os.OpenFile(machineLock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for another e2e cluster on this machine to stop: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Reap removes every run left under base (processes, namespaces, mounts,
// cgroups, links, directories), plus any harness network left without a
// state file. The caller must hold the machine lock (Start does), or know that
// no cluster is running.
func Reap(ctx context.Context, base string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	entries, err := os.ReadDir(base)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "run-") {
			continue
		}
		dir := filepath.Join(base, e.Name())
		st := readRunState(dir, log)
		log.Info("reaping a previous run", "dir", dir, "owner", st.Owner)
		if err := teardown(ctx, st, base); err != nil {
			errs = append(errs, err)
		}
	}
	// Runs started from another checkout (another clone, a CI workspace)
	// share this machine's fixed names and addresses: a crashed one there
	// blocks this one as surely as one under base. They are found by the
	// node mount-namespace files they pinned.
	for _, dir := range foreignRuns(base) {
		log.Info("reaping a previous run of another checkout", "dir", dir)
		if err := teardown(ctx, readRunState(dir, log), filepath.Dir(dir)); err != nil {
			errs = append(errs, err)
		}
	}
	// A network without a run dir (the directory was deleted by hand, or
	// lives in a mount namespace this process cannot see).
	if err := teardownNet(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// readRunState reads a run's state.json; what cannot be read leaves only
// Dir set (teardown then removes what it finds by name).
func readRunState(dir string, log *slog.Logger) runState {
	st := runState{Dir: dir}
	if b, err := os.ReadFile(filepath.Join(dir, "state.json")); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			log.Warn("unreadable run state; removing what can be found", "dir", dir, "err", err)
		}
		st.Dir = dir
	}
	return st
}

// teardown removes everything st records; every step tolerates pieces that
// are already gone, so it serves both Stop and Reap.
func teardown(ctx context.Context, st runState, base string) error {
	var errs []error
	if st.Cgroup != "" {
		cg, err := newCgroups(st.Cgroup)
		if err == nil {
			err = cg.killAll(ctx)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	// Unmounting the namespace files lets the node mount namespaces die,
	// and with them every mount the kubelets and containerds made.
	for _, m := range st.MountNS {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if err := teardownNet(ctx); err != nil {
		errs = append(errs, err)
	}
	if st.Dir != "" {
		if err := unmountUnder(st.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range st.CreatedDirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("remove created mount point %s: %w", d, err))
		}
	}
	if st.Dir != "" && errors.Join(errs...) == nil {
		last := filepath.Join(base, "last-logs")
		_ = os.RemoveAll(last)
		_ = os.Rename(filepath.Join(st.Dir, "logs"), last)
		if err := os.RemoveAll(st.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Down removes whatever a crashed or kept (Options.Keep) run left under
// opts.BaseDir. It fails if a cluster is running in a live process.
func Down(ctx context.Context, opts Options) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	if err := os.MkdirAll(opts.BaseDir, 0o755); err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	unlock, err := lockMachine(lctx, opts.BaseDir)
	if err != nil {
		return fmt.Errorf("a cluster is running in another process (stop it first): %w", err)
	}
	defer unlock()
	return Reap(ctx, opts.BaseDir, opts.Logger)
}

// runNSMount matches the node mount-namespace files a run pins:
// <base>/run-<hex>/ns/<node>.mnt.
var runNSMount = regexp.MustCompile(`^(/.+/run-[0-9a-f]+)/ns/[^/]+\.mnt$`)

// foreignRuns lists the run directories outside base that still pin a
// namespace file (nsfs mount), from /proc/self/mountinfo.
func foreignRuns(base string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	return parseForeignRuns(string(b), base)
}

func parseForeignRuns(mountinfo, base string) []string {
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(mountinfo, "\n") {
		// Fields: id parent major:minor root mountpoint options... - fstype source superopts
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 1 || tail[0] != "nsfs" {
			continue
		}
		m := runNSMount.FindStringSubmatch(unescapeMount(fields[4]))
		if m == nil || strings.HasPrefix(m[1], base+"/") || seen[m[1]] {
			continue
		}
		seen[m[1]] = true
		out = append(out, m[1])
	}
	return out
}

//go:build linux

package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is one long-running component (etcd, kube-apiserver, containerd,
// kubelet, ...). It runs in its own process group and its own pids cgroup, so
// that stopping it, or reaping a crashed run, reaches every process it forked.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // set before done is closed
}

// procSpec says how to start a component.
type procSpec struct {
	name string   // required: unique within the run, used for the log file and cgroup
	path string   // required: binary
	args []string // optional
	// netns and mntns, when set, are files of a network and a mount
	// namespace the process is started in (through nsenter).
	netns, mntns string
	env          []string // optional: appended to a minimal environment
	// outlive lets the process survive the harness process (Options.Keep);
	// otherwise it is killed when the harness dies (PR_SET_PDEATHSIG).
	outlive bool
}

// startProc starts spec with stdout and stderr in <logDir>/<name>.log. The
// process joins cgroup <cg>/<name> (created here) before it execs, through a
// tiny shell prologue, so that nothing it forks can escape the run's cgroup.
func startProc(log *slog.Logger, cg *cgroups, logDir string, spec procSpec) (*proc, error) {
	procsFile, err := cg.procDir(spec.name)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, spec.name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	defer lf.Close()

	argv := []string{spec.path}
	argv = append(argv, spec.args...)
	if spec.netns != "" || spec.mntns != "" {
		ns := []string{"nsenter"}
		if spec.netns != "" {
			ns = append(ns, "--net="+spec.netns)
		}
		if spec.mntns != "" {
			ns = append(ns, "--mount="+spec.mntns)
		}
		argv = append(append(ns, "--"), argv...)
	}
	script := `echo $$ > "$0" && exec "$@"`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, procsFile}, argv...)...)
	cmd.Env = append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
	}, spec.env...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !spec.outlive {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	p := &proc{name: spec.name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	log.Debug("started", "component", spec.name, "pid", cmd.Process.Pid, "log", logPath)
	return p, nil
}

// exited reports whether the process has exited, with its error.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// tail returns the last n lines of the process's log, for error messages.
func (p *proc) tail(n int) string {
	return tailFile(p.logPath, n)
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs a short command and returns its combined output; the error says
// what ran and what it printed.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// waitFor polls check every interval until it returns nil, ctx ends, or a
// component in watch exits (whose log tail is then in the error).
func waitFor(ctx context.Context, what string, interval time.Duration, watch []*proc, check func(context.Context) error) error {
	var last error
	for {
		for _, p := range watch {
			if done, err := p.exited(); done {
				return fmt.Errorf("%w: %s exited while waiting for %s (%v); log tail:\n%s", ErrComponentExited, p.name, what, err, p.tail(30))
			}
		}
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(interval):
		}
	}
}

// ErrComponentExited means a cluster component exited while the harness
// waited for it; the error carries the tail of its log.
var ErrComponentExited = errors.New("cluster component exited")

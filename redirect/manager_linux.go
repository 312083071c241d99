package redirect

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/ambit-mesh/ambit/bpf"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Manager owns the capture of the pods on this node. Its kernel state is
// pinned, so it outlives the process; a new Manager on the same PinDir and
// StateDir picks it up (Recover).
type Manager struct {
	opts    Options
	log     *slog.Logger
	pods    *ebpf.Map // global: netns cookie -> PodCfg
	addrs   *ebpf.Map // global: netns cookie -> PodAddr
	origdst *ebpf.Map
	skOrig  *ebpf.Map
	// listeners is the node-wide sockmap: pod slot*3 + bpf.Slot*.
	listeners *ebpf.Map

	mu    sync.Mutex
	local map[string]*podRuntime // pod ID -> in-process resources
	slots map[uint32]string      // listeners-map slot -> pod ID
	// token names this Manager in the takeover file (BeginTakeover).
	token string
}

var globalLinks = []struct {
	name   string
	attach ebpf.AttachType
	prog   func(*bpf.Capture) *ebpf.Program
}{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(c *bpf.Capture) *ebpf.Program { return c.Connect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(c *bpf.Capture) *ebpf.Program { return c.Connect6 }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(c *bpf.Capture) *ebpf.Program { return c.GetPeername4 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(c *bpf.Capture) *ebpf.Program { return c.GetPeername6 }},
	{"getsockname4", ebpf.AttachCgroupInet4GetSockname, func(c *bpf.Capture) *ebpf.Program { return c.GetSockname4 }},
	{"getsockname6", ebpf.AttachCgroupInet6GetSockname, func(c *bpf.Capture) *ebpf.Program { return c.GetSockname6 }},
	{"sockops", ebpf.AttachCGroupSockOps, func(c *bpf.Capture) *ebpf.Program { return c.SockOps }},
}

var globalMaps = []string{"pods", "pod_addrs", "origdst", "sk_orig"}

// New checks kernel features and makes sure the node-wide outbound capture
// is attached at the cgroup v2 root (reusing pinned links and maps when a
// previous process left them).
func New(ctx context.Context, opts Options) (*Manager, error) {
	if opts.PinDir == "" {
		opts.PinDir = "/sys/fs/bpf/ambit"
	}
	if opts.StateDir == "" {
		opts.StateDir = "/run/ambit/pods"
	}
	if opts.Mark == 0 && opts.MarkMask == 0 {
		opts.Mark, opts.MarkMask = DefaultMark, DefaultMarkMask
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxPods == 0 {
		opts.MaxPods = 4096
	}
	if opts.CgroupPath == "" {
		p, err := cgroup2Mount()
		if err != nil {
			return nil, err
		}
		opts.CgroupPath = p
	}
	if err := bpf.CheckFeatures(); err != nil {
		return nil, err
	}
	for _, d := range []string{filepath.Join(opts.PinDir, "global"), filepath.Join(opts.PinDir, "pods"), opts.StateDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("redirect: %w", err)
		}
	}
	m := &Manager{opts: opts, log: opts.Logger, local: map[string]*podRuntime{}, slots: map[uint32]string{}, token: newToken()}
	if err := m.ensureGlobal(ctx); err != nil {
		m.closeMaps()
		return nil, err
	}
	ids, err := m.stateIDs()
	if err != nil {
		m.closeMaps()
		return nil, err
	}
	for _, id := range ids {
		if st, err := m.readState(id); err == nil && st != nil {
			m.slots[st.Slot] = id
		}
	}
	return m, nil
}

func (m *Manager) globalPin(name string) string {
	return filepath.Join(m.opts.PinDir, "global", name)
}

// ensureGlobal loads pinned global maps (or creates them) and attaches any
// global program whose pinned link is missing.
func (m *Manager) ensureGlobal(context.Context) error {
	maps := map[string]*ebpf.Map{}
	for _, n := range globalMaps {
		mp, err := ebpf.LoadPinnedMap(m.globalPin("map_"+n), nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("redirect: load pinned map %s: %w", n, err)
		}
		maps[n] = mp
	}
	// Always load this binary's programs: pinned links are updated in place
	// (atomic for cgroup links), so a new daemon version brings its
	// programs along while sharing the pinned maps; missing links are
	// attached.
	c, err := bpf.LoadCapture(bpf.CaptureOptions{Mark: m.opts.Mark, MarkMask: m.opts.MarkMask, Maps: maps})
	if err != nil {
		return err
	}
	defer c.Close()
	for name, mp := range map[string]*ebpf.Map{"pods": c.Pods, "pod_addrs": c.PodAddrs, "origdst": c.OrigDst, "sk_orig": c.SkOrig} {
		if _, ok := maps[name]; ok {
			continue
		}
		if err := mp.Pin(m.globalPin("map_" + name)); err != nil {
			return fmt.Errorf("redirect: pin %s: %w", name, err)
		}
		if maps[name], err = mp.Clone(); err != nil {
			return err
		}
	}
	for _, g := range globalLinks {
		attach := func() (link.Link, error) {
			return link.AttachCgroup(link.CgroupOptions{Path: m.opts.CgroupPath, Attach: g.attach, Program: g.prog(c)})
		}
		if err := ensureLink(m.globalPin(g.name), g.prog(c), attach); err != nil {
			return fmt.Errorf("redirect: %s at %s: %w", g.name, m.opts.CgroupPath, err)
		}
	}
	m.pods, m.addrs, m.origdst, m.skOrig = maps["pods"], maps["pod_addrs"], maps["origdst"], maps["sk_orig"]
	lm, err := ebpf.LoadPinnedMap(m.globalPin("map_listeners"), nil)
	if errors.Is(err, fs.ErrNotExist) {
		if lm, err = bpf.NewListenersMap(m.opts.MaxPods); err != nil {
			return err
		}
		if err := lm.Pin(m.globalPin("map_listeners")); err != nil {
			lm.Close()
			return fmt.Errorf("redirect: pin listeners: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("redirect: load pinned listeners map: %w", err)
	}
	m.listeners = lm
	return nil
}

func (m *Manager) closeMaps() {
	for _, mp := range []*ebpf.Map{m.pods, m.addrs, m.origdst, m.skOrig, m.listeners} {
		if mp != nil {
			mp.Close()
		}
	}
}

// Close releases this process's resources (listeners, file descriptors)
// without touching pinned kernel state: enrolled pods stay captured, and
// with no listener their captured connections fail rather than leak.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, r := range m.local {
		r.close()
		delete(m.local, id)
	}
	m.closeMaps()
	return nil
}

// Uninstall removes every enrolled pod and then the node-wide programs,
// maps and pins. For uninstalling ambit from a node and for tests.
func (m *Manager) Uninstall(ctx context.Context) error {
	ids, err := m.stateIDs()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		errs = append(errs, m.Remove(ctx, PodNetns{ID: id}))
	}
	for _, g := range globalLinks {
		errs = append(errs, unpinLink(m.globalPin(g.name)))
	}
	m.Close()
	for _, n := range append(slices.Clone(globalMaps), "listeners") {
		if err := os.Remove(m.globalPin("map_" + n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, d := range []string{filepath.Join(m.opts.PinDir, "global"), filepath.Join(m.opts.PinDir, "pods"), m.opts.PinDir} {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unpinLink detaches and unpins a pinned link; a missing pin is not an error.
func unpinLink(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		// Not loadable as a link: still remove the pin.
		if rerr := os.Remove(path); rerr != nil {
			return errors.Join(err, rerr)
		}
		return nil
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("redirect: unpin %s: %w", path, err)
	}
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("redirect: detach %s: %w", path, err)
	}
	return nil
}

func cgroup2Mount() (string, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "", fmt.Errorf("redirect: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == "cgroup2" {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("redirect: no cgroup2 mount found (needed to attach the outbound capture)")
}

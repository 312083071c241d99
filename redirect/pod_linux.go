package redirect

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/ambit-mesh/ambit/bpf"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// podRuntime is what this process holds for an enrolled pod.
type podRuntime struct {
	ns        *os.File
	ownNs     bool
	cookie    uint64
	listeners [3]*net.TCPListener // by bpf.Slot*
}

func (r *podRuntime) close() {
	for i, l := range r.listeners {
		if l != nil {
			l.Close()
			r.listeners[i] = nil
		}
	}
	if r.ownNs && r.ns != nil {
		r.ns.Close()
	}
}

// Pin names of a pod's objects under PinDir/pods/<ID>/.
const (
	pinLookup = "link_lookup"
	pinStats  = "map_stats"
)

var podLinkPins = []string{pinLookup}

func (m *Manager) podDir(id string) string { return filepath.Join(m.opts.PinDir, "pods", id) }

// Apply makes the kernel state of pod's capture match desired. It is safe
// to call any number of times with the same arguments (the second call
// changes nothing), and with a changed config (programs are replaced in
// place through their links; listeners and counters are kept). A pod whose
// state was pinned by another process gets this process's listeners
// swapped into its sockmap: that is the restart/upgrade takeover.
//
// Order matters for failing closed: the per-pod programs (inbound steering,
// egress default deny) are attached before the pod is entered into the
// node-wide outbound capture.
func (m *Manager) Apply(ctx context.Context, pod PodNetns, desired Config) error {
	if err := pod.validate(desired); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.apply(ctx, pod, desired)
	if err != nil {
		m.log.Error("capture apply failed", "pod", pod.ID, "err", err)
	}
	return err
}

func (m *Manager) apply(ctx context.Context, pod PodNetns, desired Config) error {
	r := m.local[pod.ID]
	// The Manager keeps its own handle on the namespace (for Dial and
	// listeners): the caller's pod.Netns is duplicated, never retained.
	var ns *os.File
	ownNs := false
	switch {
	case r != nil && pod.Netns == nil:
		ns = r.ns
	case pod.Netns != nil:
		fd, err := unix.FcntlInt(pod.Netns.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("redirect: dup netns of %s: %w", pod.ID, err)
		}
		ns, ownNs = os.NewFile(uintptr(fd), pod.NetnsPath), true
	default:
		f, err := os.Open(pod.NetnsPath)
		if err != nil {
			return fmt.Errorf("redirect: open netns of %s: %w", pod.ID, err)
		}
		ns, ownNs = f, true
	}
	fail := func(err error) error {
		if ownNs && (r == nil || r.ns != ns) {
			ns.Close()
		}
		return err
	}
	if err := CheckPodNetns(ns, m.opts.HostNetns); err != nil {
		return fail(fmt.Errorf("pod %s: %w", pod.ID, err))
	}
	cookie, err := netnsCookie(ns)
	if err != nil {
		return fail(err)
	}
	prev, err := m.readState(pod.ID)
	if err != nil {
		return fail(err)
	}
	if prev == nil {
		// A new capture: BeginTakeover waits for it to be recorded, and a
		// Manager that a successor took over makes none.
		unlock, err := m.lockCaptures(unix.LOCK_SH)
		if err != nil {
			return fail(err)
		}
		defer unlock()
		if owner := m.takeoverOwner(); owner != "" && owner != m.token {
			return fail(ErrHandedOver)
		}
	}
	if prev != nil && prev.Cookie != cookie {
		// Same ID, another namespace (sandbox recreated): start over.
		m.log.Info("capture: pod netns changed, replacing state", "pod", pod.ID)
		if err := m.remove(pod.ID); err != nil {
			return fail(err)
		}
		prev, r = nil, nil
	}
	if r != nil && r.cookie != cookie {
		r.close()
		delete(m.local, pod.ID)
		r = nil
	}
	if prev == nil {
		// One namespace, one capture: a namespace already captured under
		// another ID (a predecessor enrolled the pod at its CNI ADD while
		// this process was starting; this one finds it running) is taken
		// over under pod.ID, its slot and programs kept. Two captures would
		// attach two inbound programs, and the other one's slot empties
		// when its process exits: every connection would be dropped.
		other, err := m.capturedAs(cookie, pod.ID)
		if err != nil {
			return fail(err)
		}
		if other != nil {
			m.log.Info("capture: namespace already captured under another ID; taking it over", "pod", pod.ID, "was", other.Pod.ID)
			if err := m.rekey(other, pod.ID); err != nil {
				return fail(err)
			}
			if lr := m.local[other.Pod.ID]; lr != nil {
				delete(m.local, other.Pod.ID)
				if r == nil {
					r = lr
				} else {
					lr.close()
				}
			}
			prev = other
			prev.Pod.ID = pod.ID
		}
	}
	dir := m.podDir(pod.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(fmt.Errorf("redirect: %w", err))
	}
	st := &podState{Pod: pod, Config: desired, Cookie: cookie, Programs: bpf.PodObjectHash()}
	st.Pod.Netns = nil
	if prev != nil {
		st.Slot = prev.Slot
		if err := m.keepSlot(st.Slot, pod.ID); err != nil {
			return fail(err)
		}
	} else if st.Slot, err = m.allocSlot(pod.ID); err != nil {
		_ = os.Remove(dir) // made above, still empty
		return fail(err)
	}
	if err := m.ensurePodPrograms(ns, prev, st); err != nil {
		if prev == nil {
			_ = m.releaseSlot(st.Slot, pod.ID)
		}
		return fail(err)
	}
	if err := linkUp(ns, "lo"); err != nil {
		return fail(err)
	}
	// Listeners before the outbound capture, so that a captured connect
	// always finds one.
	if r == nil {
		r = &podRuntime{ns: ns, ownNs: ownNs, cookie: cookie}
	} else if ns != r.ns && ownNs {
		ns.Close() // r keeps the handle it already has on this netns
	}
	if err := m.ensureListeners(ctx, st, r); err != nil {
		if m.local[pod.ID] != r {
			r.close()
		}
		return err
	}
	m.local[pod.ID] = r
	v, err := bpf.NewPodCfg(desired.OutboundExcludePorts)
	if err != nil {
		return err
	}
	// The addresses first: a captured socket's getsockname must never fall
	// back to loopback once the pod is enrolled.
	a := bpf.NewPodAddr(pod.Addresses)
	if err := m.addrs.Update(cookie, &a, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("redirect: addresses of %s: %w", pod.ID, err)
	}
	if err := m.pods.Update(cookie, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("redirect: enrol netns of %s: %w", pod.ID, err)
	}
	return m.writeState(st)
}

// ensurePodPrograms loads and attaches (or updates in place) the per-pod
// programs unless the attached ones already match st.
func (m *Manager) ensurePodPrograms(ns *os.File, prev, st *podState) error {
	dir := m.podDir(st.Pod.ID)
	maps := map[string]*ebpf.Map{}
	defer func() {
		for _, mp := range maps {
			mp.Close()
		}
	}()
	if mp, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinStats), nil); err == nil {
		maps["stats"] = mp
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("redirect: load pinned stats of %s: %w", st.Pod.ID, err)
	}
	podH, err := nlHandle(ns)
	if err != nil {
		return err
	}
	defer podH.Close()
	hostH, err := nlHandle(m.opts.HostNetns)
	if err != nil {
		return err
	}
	defer hostH.Close()

	// Filters this pod should have; the pod-side ingress anti-spoofing
	// filter only when the host side is unknown (the host-side filter
	// covers it otherwise).
	type want struct {
		h      *netlink.Handle
		ifname string
		f      tcFilter
		prog   func(*bpf.Pod) *ebpf.Program
	}
	wants := []want{{podH, st.Pod.Interface, tcPodEgress, func(p *bpf.Pod) *ebpf.Program { return p.PodEgress }}}
	if st.Pod.HostInterface != "" {
		wants = append(wants, want{hostH, st.Pod.HostInterface, tcHostEgress, func(p *bpf.Pod) *ebpf.Program { return p.HostEgress }})
	} else {
		wants = append(wants, want{podH, st.Pod.Interface, tcPodIngress, func(p *bpf.Pod) *ebpf.Program { return p.PodIngress }})
	}

	complete := len(maps) == 1
	if _, err := os.Stat(filepath.Join(dir, pinLookup)); err != nil {
		complete = false
	}
	for _, w := range wants {
		if bf, err := findFilter(w.h, w.ifname, w.f); err != nil || bf == nil {
			complete = false
		}
	}
	if complete && prev != nil && prev.sameAs(st) {
		return nil
	}
	// Filters no longer wanted (interfaces changed, host side appeared or
	// went away) are removed first.
	if prev != nil {
		if prev.Pod.Interface != st.Pod.Interface || st.Pod.HostInterface != "" {
			if err := removeFilter(podH, prev.Pod.Interface, tcPodIngress); err != nil {
				return err
			}
		}
		if prev.Pod.Interface != st.Pod.Interface {
			if err := removeFilter(podH, prev.Pod.Interface, tcPodEgress); err != nil {
				return err
			}
		}
		if prev.Pod.HostInterface != "" && prev.Pod.HostInterface != st.Pod.HostInterface {
			if err := removeFilter(hostH, prev.Pod.HostInterface, tcHostEgress); err != nil {
				return err
			}
		}
	}
	lm, err := m.listeners.Clone()
	if err != nil {
		return err
	}
	maps["listeners"] = lm
	p, err := bpf.LoadPod(bpf.PodConfig{
		Own: st.Pod.Addresses, Probe: st.Config.ProbeSources,
		InExclude: st.Config.InboundExcludePorts, OutExclude: st.Config.OutboundExcludePorts,
		Mark: m.opts.Mark, MarkMask: m.opts.MarkMask, SlotBase: 3 * st.Slot,
	}, maps)
	if err != nil {
		return err
	}
	defer p.Close()
	if _, err := os.Stat(filepath.Join(dir, pinStats)); err != nil {
		if err := p.Stats.Pin(filepath.Join(dir, pinStats)); err != nil {
			return fmt.Errorf("redirect: pin stats: %w", err)
		}
	}
	// Egress default deny and anti-forgery first, inbound steering last.
	for _, w := range wants {
		if err := ensureFilter(w.h, w.ifname, w.f, w.prog(p)); err != nil {
			return err
		}
	}
	attachLookup := func() (link.Link, error) { return link.AttachNetNs(int(ns.Fd()), p.Lookup) }
	return ensureLink(filepath.Join(dir, pinLookup), p.Lookup, attachLookup)
}

// ensureLink updates the pinned link at pin to prog, or attaches and pins.
func ensureLink(pin string, prog *ebpf.Program, attach func() (link.Link, error)) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if err == nil {
		defer l.Close()
		if err := l.Update(prog); err != nil {
			return fmt.Errorf("redirect: update %s: %w", filepath.Base(pin), err)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("redirect: load %s: %w", pin, err)
	}
	l, err = attach()
	if err != nil {
		return fmt.Errorf("redirect: attach %s: %w", filepath.Base(pin), err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		l.Detach()
		return fmt.Errorf("redirect: pin %s: %w", filepath.Base(pin), err)
	}
	return nil
}

// ensureListeners creates this process's listeners in the pod netns if it
// has none, and (re)places them in the pod's sockmap. Replacing a slot is
// atomic: a new connection finds either the old or the new listener.
func (m *Manager) ensureListeners(ctx context.Context, st *podState, r *podRuntime) error {
	id := st.Pod.ID
	var missing []int
	for slot, l := range r.listeners {
		if l == nil {
			missing = append(missing, slot)
		}
	}
	if len(missing) > 0 {
		lns, err := listenIn(ctx, r.ns, m.opts.Mark, len(missing))
		if err != nil {
			return err
		}
		for i, slot := range missing {
			r.listeners[slot] = lns[i]
		}
	}
	for slot := range r.listeners {
		rc, err := r.listeners[slot].SyscallConn()
		if err != nil {
			return err
		}
		var uerr error
		if err := rc.Control(func(fd uintptr) {
			uerr = m.listeners.Update(3*st.Slot+uint32(slot), uint64(fd), ebpf.UpdateAny)
		}); err != nil {
			return err
		}
		if uerr != nil {
			return fmt.Errorf("redirect: put listener in sockmap of %s: %w", id, uerr)
		}
	}
	return nil
}

func linkUp(ns *os.File, name string) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()))
	if err != nil {
		return fmt.Errorf("redirect: netlink handle: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("redirect: %s: %w", name, err)
	}
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("redirect: set %s up: %w", name, err)
	}
	return nil
}

// Remove takes pod out of capture and leaves nothing behind: the node-wide
// map entry, links (programs detach), pinned maps, listeners and the state
// file. Removing an unknown pod succeeds.
func (m *Manager) Remove(_ context.Context, pod PodNetns) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.remove(pod.ID)
}

func (m *Manager) remove(id string) error {
	if !idRE.MatchString(id) || id == "." || id == ".." {
		return fmt.Errorf("%w: pod ID %q", ErrInvalid, id)
	}
	var errs []error
	st, err := m.readState(id)
	errs = append(errs, err)
	r := m.local[id]
	for _, c := range []uint64{stCookie(st), rCookie(r)} {
		if c != 0 {
			if err := m.pods.Delete(c); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
			if err := m.addrs.Delete(c); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if st != nil {
		// Before the runtime (and its netns handle) goes.
		errs = append(errs, m.removeFilters(st, r))
		for i := range uint32(3) {
			if err := m.listeners.Delete(3*st.Slot + i); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if r != nil {
		r.close()
		delete(m.local, id)
	}
	dir := m.podDir(id)
	for _, pin := range podLinkPins {
		errs = append(errs, unpinLink(filepath.Join(dir, pin)))
	}
	if err := os.Remove(filepath.Join(dir, pinStats)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := os.Remove(m.statePath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	// Last: the slot is free for another pod only once its listener
	// entries are gone.
	if st != nil {
		errs = append(errs, m.releaseSlot(st.Slot, id))
	}
	return errors.Join(errs...)
}

func stCookie(s *podState) uint64 {
	if s == nil {
		return 0
	}
	return s.Cookie
}

func rCookie(r *podRuntime) uint64 {
	if r == nil {
		return 0
	}
	return r.cookie
}

// Listeners returns this process's listeners in an enrolled pod.
func (m *Manager) Listeners(id string) (Listeners, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.local[id]
	if r == nil {
		return Listeners{}, fmt.Errorf("%w: %s", ErrUnknownPod, id)
	}
	return Listeners{Outbound: r.listeners[bpf.SlotOutbound], Inbound: r.listeners[bpf.SlotInbound], HBONE: r.listeners[bpf.SlotHBONE]}, nil
}

// Dial connects from inside the pod's netns with ambit's marked socket,
// which capture never redirects (the tunnel's server dialing the app, its
// client dialing a peer's 15008).
func (m *Manager) Dial(ctx context.Context, id, network, address string) (net.Conn, error) {
	m.mu.Lock()
	r := m.local[id]
	var ns *os.File
	if r != nil {
		ns = r.ns
	}
	m.mu.Unlock()
	if ns == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownPod, id)
	}
	return dialIn(ctx, ns, m.opts.Mark, network, address)
}

// Recorded lists the pods whose capture state a process recorded (those
// Recover would re-apply), without touching the kernel: a successor reads
// them first to prepare what their data paths need (certificates) before
// Recover moves their connections to it.
func (m *Manager) Recorded() ([]PodNetns, error) {
	ids, err := m.stateIDs()
	if err != nil {
		return nil, err
	}
	var out []PodNetns
	for _, id := range ids {
		if st, err := m.readState(id); err == nil && st != nil {
			out = append(out, st.Pod)
		}
	}
	return out, nil
}

// Recover re-applies every pod recorded in the state directory (after a
// daemon restart): programs are checked, this process's listeners are
// swapped in. A pod whose netns is gone is removed. It returns the pods it
// recovered.
func (m *Manager) Recover(ctx context.Context) ([]PodNetns, error) {
	ids, err := m.stateIDs()
	if err != nil {
		return nil, err
	}
	var out []PodNetns
	var errs []error
	for _, id := range ids {
		st, err := m.readState(id)
		if err != nil || st == nil {
			errs = append(errs, err)
			continue
		}
		if _, err := os.Stat(st.Pod.NetnsPath); err != nil {
			m.log.Info("capture: pod netns gone, removing", "pod", id)
			errs = append(errs, m.Remove(ctx, st.Pod))
			continue
		}
		if err := m.Apply(ctx, st.Pod, st.Config); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, st.Pod)
	}
	slices.SortFunc(out, func(a, b PodNetns) int { return cmpString(a.ID, b.ID) })
	return out, errors.Join(errs...)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// removeFilters deletes the pod's tc filters: inside its netns (if it
// still exists; its interfaces die with it) and on the host side.
func (m *Manager) removeFilters(st *podState, r *podRuntime) error {
	var errs []error
	var ns *os.File
	if r != nil {
		ns = r.ns
	} else if f, err := os.Open(st.Pod.NetnsPath); err == nil {
		defer f.Close()
		ns = f
	}
	if ns != nil {
		if h, err := nlHandle(ns); err == nil {
			errs = append(errs, removeFilter(h, st.Pod.Interface, tcPodEgress), removeFilter(h, st.Pod.Interface, tcPodIngress))
			h.Close()
		} else {
			errs = append(errs, err)
		}
	}
	if st.Pod.HostInterface != "" {
		if h, err := nlHandle(m.opts.HostNetns); err == nil {
			errs = append(errs, removeFilter(h, st.Pod.HostInterface, tcHostEgress))
			h.Close()
		} else {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

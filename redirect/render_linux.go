package redirect

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ambit-mesh/ambit/bpf"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// State renders the capture's kernel state as text, read back from the
// kernel rather than from memory: node-wide programs (and whether the
// kernel lists them as attached), enrolled namespaces, and per pod its
// links, interfaces, listeners and config. Deterministic (no cookies, IDs
// or ifindexes), for golden tests and the admin endpoint.
func (m *Manager) State() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	cg, err := os.Open(m.opts.CgroupPath)
	if err != nil {
		return "", fmt.Errorf("redirect: %w", err)
	}
	defer cg.Close()
	b.WriteString("global\n")
	for _, g := range globalLinks {
		fmt.Fprintf(&b, "  %s %s\n", g.name, linkStatus(m.globalPin(g.name), int(cg.Fd()), g.attach))
	}
	ids, err := m.stateIDs()
	if err != nil {
		return "", err
	}
	cookies := map[uint64]string{}
	states := map[string]*podState{}
	for _, id := range ids {
		st, err := m.readState(id)
		if err != nil {
			return "", err
		}
		if st != nil {
			states[id] = st
			cookies[st.Cookie] = id
		}
	}
	var enrolled []string
	var k uint64
	var v bpf.PodCfg
	it := m.pods.Iterate()
	for it.Next(&k, &v) {
		name, ok := cookies[k]
		if !ok {
			name = "unknown-netns"
		}
		enrolled = append(enrolled, fmt.Sprintf("%s out_exclude=%v", name, trimZero(v.OutExclude[:])))
	}
	if err := it.Err(); err != nil {
		return "", fmt.Errorf("redirect: iterate pods: %w", err)
	}
	slices.Sort(enrolled)
	for _, e := range enrolled {
		fmt.Fprintf(&b, "  enrolled %s\n", e)
	}
	// pod_addrs is written with pods and removed with it: an entry of a
	// netns that is not enrolled is a leftover, shown as one.
	var stale []string
	var a bpf.PodAddr
	ait := m.addrs.Iterate()
	for ait.Next(&k, &a) {
		var cfg bpf.PodCfg
		if err := m.pods.Lookup(k, &cfg); err == nil {
			continue
		}
		name, ok := cookies[k]
		if !ok {
			name = "unknown-netns"
		}
		stale = append(stale, name)
	}
	if err := ait.Err(); err != nil {
		return "", fmt.Errorf("redirect: iterate pod addresses: %w", err)
	}
	slices.Sort(stale)
	for _, n := range stale {
		fmt.Fprintf(&b, "  addresses of a netns not enrolled: %s\n", n)
	}
	for _, id := range ids {
		m.renderPod(&b, id, states[id])
	}
	return b.String(), nil
}

func (m *Manager) renderPod(b *strings.Builder, id string, st *podState) {
	fmt.Fprintf(b, "pod %s\n", id)
	if st == nil {
		b.WriteString("  state file missing\n")
	} else {
		fmt.Fprintf(b, "  interface %s host %q addresses %v\n", st.Pod.Interface, st.Pod.HostInterface, st.Pod.Addresses)
		fmt.Fprintf(b, "  config probe %v in_exclude %v out_exclude %v\n", st.Config.ProbeSources, st.Config.InboundExcludePorts, st.Config.OutboundExcludePorts)
	}
	dir := m.podDir(id)
	r := m.local[id]
	var ns *os.File
	if r != nil {
		ns = r.ns
	} else if st != nil {
		if f, err := os.Open(st.Pod.NetnsPath); err == nil {
			defer f.Close()
			ns = f
		}
	}
	if ns == nil {
		b.WriteString("  netns unavailable\n")
	} else {
		fmt.Fprintf(b, "  link lookup %s\n", linkStatus(filepath.Join(dir, pinLookup), int(ns.Fd()), ebpf.AttachSkLookup))
		if st == nil {
			b.WriteString("  tc unknown interfaces\n")
		} else if h, err := nlHandle(ns); err != nil {
			fmt.Fprintf(b, "  tc %v\n", err)
		} else {
			fmt.Fprintf(b, "  tc pod_egress %s\n", filterStatus(h, st.Pod.Interface, tcPodEgress))
			if bf, _ := findFilter(h, st.Pod.Interface, tcPodIngress); bf != nil || st.Pod.HostInterface == "" {
				fmt.Fprintf(b, "  tc pod_ingress %s\n", filterStatus(h, st.Pod.Interface, tcPodIngress))
			}
			h.Close()
			if hh, err := nlHandle(m.opts.HostNetns); err == nil {
				if bf, _ := findFilter(hh, st.Pod.HostInterface, tcHostEgress); bf != nil || st.Pod.HostInterface != "" {
					fmt.Fprintf(b, "  tc host_egress %s\n", filterStatus(hh, st.Pod.HostInterface, tcHostEgress))
				}
				hh.Close()
			}
		}
	}
	if st != nil {
		for slot, name := range []string{"outbound", "inbound", "hbone"} {
			var cookie uint64
			s := "empty"
			if err := m.listeners.Lookup(3*st.Slot+uint32(slot), &cookie); err == nil {
				s = "other-process"
				if r != nil && r.listeners[slot] != nil {
					if own, err := sockopt(r.listeners[slot], unix.SO_COOKIE); err == nil && own == cookie {
						s = "this-process"
					}
				}
			}
			fmt.Fprintf(b, "  listener %s %s\n", name, s)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, pinStats)); err != nil {
		fmt.Fprintf(b, "  stats map %s\n", errText(err))
	}
}

// linkStatus loads a pinned link and asks the kernel whether its program
// is attached to target.
func linkStatus(pin string, target int, attach ebpf.AttachType) string {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return "pin " + errText(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return "info " + errText(err)
	}
	q, err := link.QueryPrograms(link.QueryOptions{Target: target, Attach: attach})
	if err != nil {
		return "query " + errText(err)
	}
	for _, p := range q.Programs {
		if p.ID == info.Program {
			return "attached " + attachName(attach)
		}
	}
	return "pinned but NOT attached"
}

func attachName(a ebpf.AttachType) string {
	switch a {
	case ebpf.AttachTCXEgress:
		return "tcx_egress"
	case ebpf.AttachTCXIngress:
		return "tcx_ingress"
	case ebpf.AttachSkLookup:
		return "sk_lookup"
	}
	return strings.ToLower(a.String())
}

func errText(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "missing"
	}
	return "error: " + err.Error()
}

func trimZero(p []uint16) []uint16 {
	var out []uint16
	for _, v := range p {
		if v != 0 {
			out = append(out, v)
		}
	}
	return out
}

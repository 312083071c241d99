package redirect

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

var podTmpl = template.Must(template.ParseFiles("testdata/pod.golden.tmpl"))

func readGolden(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func join[T any](v []T) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, " ")
}

// wantState is the text State must render for the given enrolled pods
// (sorted by ID), from the golden files.
func wantState(t *testing.T, pods map[string]*testPod, cfgs map[string]Config, owner string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(readGolden(t, "global.golden"))
	ids := make([]string, 0, len(cfgs))
	for id := range cfgs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "  enrolled %s out_exclude=[%s]\n", id, join(cfgs[id].OutboundExcludePorts))
	}
	for _, id := range ids {
		p, c := pods[id], cfgs[id]
		err := podTmpl.Execute(&b, map[string]any{
			"ID": id, "HostIf": p.hostIf, "V4": p.v4, "V6": p.v6, "Owner": owner,
			"Probe": join(c.ProbeSources), "InEx": join(c.InboundExcludePorts), "OutEx": join(c.OutboundExcludePorts),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func state(t *testing.T, m *Manager) string {
	t.Helper()
	s, err := m.State()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func progIDs(t *testing.T, m *Manager, id string) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	for _, pin := range podLinkPins {
		l, err := link.LoadPinnedLink(filepath.Join(m.podDir(id), pin), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.Program)
	}
	return ids
}

// Guarantee 6: Apply twice gives the same kernel state (the second call
// reloads nothing), a changed config is applied in place, and Remove
// leaves nothing: no programs on the netns or either interface, no pins,
// no state file, no map entry, listeners closed.
func TestApplyIdempotentAndRemove(t *testing.T) {
	l := newLab(t)
	a := l.pod("pod-a", 2)
	m := testManager(t)
	ctx := ctxT(t, 20*time.Second)
	pods := map[string]*testPod{"pod-a": a}
	cfg1 := Config{OutboundExcludePorts: []uint16{53}}
	if err := m.Apply(ctx, a.netns(), cfg1); err != nil {
		t.Fatal(err)
	}
	want := wantState(t, pods, map[string]Config{"pod-a": cfg1}, "this-process")
	if got := state(t, m); got != want {
		t.Fatalf("after apply:\n%s\nwant:\n%s", got, want)
	}
	ids := progIDs(t, m, "pod-a")
	ls, _ := m.Listeners("pod-a")
	if err := m.Apply(ctx, a.netns(), cfg1); err != nil {
		t.Fatal(err)
	}
	if got := state(t, m); got != want {
		t.Fatalf("after second apply:\n%s\nwant:\n%s", got, want)
	}
	if got := progIDs(t, m, "pod-a"); !slices.Equal(got, ids) {
		t.Errorf("second apply replaced programs: %v -> %v", ids, got)
	}
	if ls2, _ := m.Listeners("pod-a"); ls2 != ls {
		t.Error("second apply replaced listeners")
	}

	cfg2 := Config{ProbeSources: []netip.Addr{l.gw4}, InboundExcludePorts: []uint16{22, 9000}}
	if err := m.Apply(ctx, a.netns(), cfg2); err != nil {
		t.Fatal(err)
	}
	want = wantState(t, pods, map[string]Config{"pod-a": cfg2}, "this-process")
	if got := state(t, m); got != want {
		t.Fatalf("after config change:\n%s\nwant:\n%s", got, want)
	}
	if got := progIDs(t, m, "pod-a"); slices.Equal(got, ids) {
		t.Error("config change did not replace programs")
	}

	if err := m.Remove(ctx, a.netns()); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, a.netns()); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if got, want := state(t, m), readGolden(t, "global.golden"); got != want {
		t.Fatalf("after remove:\n%s\nwant:\n%s", got, want)
	}
	assertNothingLeft(t, m, a)
	if _, err := ls.Outbound.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener after remove: %v, want closed", err)
	}
}

// assertNothingLeft asks the kernel directly, not State.
func assertNothingLeft(t *testing.T, m *Manager, p *testPod) {
	t.Helper()
	q, err := link.QueryPrograms(link.QueryOptions{Target: int(p.ns.Fd()), Attach: ebpf.AttachSkLookup})
	if err != nil || len(q.Programs) != 0 {
		t.Errorf("sk_lookup programs on %s netns: %v (%v)", p.name, q, err)
	}
	// No filter and no clsact qdisc left on either side.
	for _, side := range []struct {
		ns     *os.File
		ifname string
	}{{p.ns, "eth0"}, {nil, p.hostIf}} {
		h, err := nlHandle(side.ns)
		if err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(side.ifname)
		if err != nil {
			t.Fatal(err)
		}
		for _, parent := range []uint32{netlink.HANDLE_MIN_EGRESS, netlink.HANDLE_MIN_INGRESS} {
			if fs, err := h.FilterList(l, parent); err != nil || len(fs) != 0 {
				t.Errorf("filters on %s: %v %v", side.ifname, fs, err)
			}
		}
		qs, _ := h.QdiscList(l)
		for _, q := range qs {
			if q.Type() == "clsact" {
				t.Errorf("clsact left on %s", side.ifname)
			}
		}
		h.Close()
	}
	if _, err := os.Stat(m.podDir(p.name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir of %s still there: %v", p.name, err)
	}
	if _, err := os.Stat(m.statePath(p.name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file of %s still there: %v", p.name, err)
	}
}

// Guarantee 6, transitions: random applies (two configs) and removes of
// three pods; after every step the rendered kernel state is exactly the
// model's, and removing everything leaves only the node-wide programs.
func TestRandomTransitions(t *testing.T) {
	l := newLab(t)
	pods := map[string]*testPod{}
	for i, n := range []string{"pod-a", "pod-b", "pod-c"} {
		pods[n] = l.pod(n, i+2)
	}
	configs := []Config{
		{},
		{ProbeSources: []netip.Addr{l.gw4, l.gw6}, OutboundExcludePorts: []uint16{53, 8443}},
	}
	m := testManager(t)
	ctx := ctxT(t, 60*time.Second)
	model := map[string]Config{}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	names := []string{"pod-a", "pod-b", "pod-c"}
	for step := range 30 {
		n := names[rng.IntN(len(names))]
		switch op := rng.IntN(3); op {
		case 0:
			if err := m.Remove(ctx, pods[n].netns()); err != nil {
				t.Fatalf("step %d remove %s: %v", step, n, err)
			}
			delete(model, n)
		default:
			if err := m.Apply(ctx, pods[n].netns(), configs[op-1]); err != nil {
				t.Fatalf("step %d apply %s: %v", step, n, err)
			}
			model[n] = configs[op-1]
		}
		if got, want := state(t, m), wantState(t, pods, model, "this-process"); got != want {
			t.Fatalf("step %d:\n%s\nwant:\n%s", step, got, want)
		}
	}
	for _, n := range names {
		if err := m.Remove(ctx, pods[n].netns()); err != nil {
			t.Fatal(err)
		}
		assertNothingLeft(t, m, pods[n])
	}
	if got, want := state(t, m), readGolden(t, "global.golden"); got != want {
		t.Fatalf("end:\n%s\nwant:\n%s", got, want)
	}
	globalIDs := map[ebpf.AttachType]ebpf.ProgramID{}
	for _, g := range globalLinks {
		l, err := link.LoadPinnedLink(m.globalPin(g.name), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := l.Info()
		l.Close()
		globalIDs[g.attach] = info.Program
	}
	if err := m.Uninstall(context.Background()); err != nil {
		t.Fatal(err)
	}
	cgf, err := os.Open(m.opts.CgroupPath)
	if err != nil {
		t.Fatal(err)
	}
	defer cgf.Close()
	for at, id := range globalIDs {
		q, err := link.QueryPrograms(link.QueryOptions{Target: int(cgf.Fd()), Attach: at})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range q.Programs {
			if p.ID == id {
				t.Errorf("program %d still attached as %v after uninstall", id, at)
			}
		}
	}
	if _, err := os.Stat(m.opts.PinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir after uninstall: %v", err)
	}
	cg, err := os.Open(m.opts.CgroupPath)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	for _, g := range globalLinks {
		if s := linkStatus(m.globalPin(g.name), int(cg.Fd()), g.attach); s != "pin missing" {
			t.Errorf("%s after uninstall: %s", g.name, s)
		}
	}
}

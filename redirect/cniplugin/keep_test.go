package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a slog handler keeping the messages it got.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Level.String()+" "+r.Message)
	return nil
}
func (h *recorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recorder) WithGroup(string) slog.Handler      { return h }

func (h *recorder) count(substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

type keepFixture struct {
	o       InstallOptions
	conf    string // the active conflist
	bin     string // the installed binary
	log     *recorder
	stop    string
	golden  []byte
	srcData []byte
}

func newKeepFixture(t *testing.T) *keepFixture {
	t.Helper()
	binDir, confDir, src := setupDirs(t)
	f := &keepFixture{o: InstallOptions{BinDir: binDir, ConfDir: confDir, Binary: src},
		conf: filepath.Join(confDir, "10-containerd-net.conflist"), bin: filepath.Join(binDir, PluginType),
		log: &recorder{}, stop: filepath.Join(t.TempDir(), "ambit-cni.stop")}
	f.golden, _ = os.ReadFile("testdata/10-containerd-net.conflist.installed")
	f.srcData, _ = os.ReadFile(src)
	return f
}

func (f *keepFixture) reconciler(t *testing.T) *Reconciler {
	t.Helper()
	r, err := NewReconciler(ReconcilerOptions{InstallOptions: f.o, StopFile: f.stop, Log: slog.New(f.log)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// installed fails the test unless the conflist is the golden installed one
// and the binary is the source.
func (f *keepFixture) installed(t *testing.T, when string) {
	t.Helper()
	got, _ := os.ReadFile(f.conf)
	if !bytes.Equal(got, f.golden) {
		t.Fatalf("%s: conflist\n%s\nwant\n%s", when, got, f.golden)
	}
	bin, err := os.ReadFile(f.bin)
	if err != nil || !bytes.Equal(bin, f.srcData) {
		t.Fatalf("%s: binary %q %v, want the source", when, bin, err)
	}
}

func TestReconcilerRepairsAfterUninstall(t *testing.T) {
	f := newKeepFixture(t)
	ctx := context.Background()
	if err := Install(f.o); err != nil { // the init container
		t.Fatal(err)
	}
	r := f.reconciler(t)
	inoConf, inoBin := inode(t, f.conf), inode(t, f.bin)
	for range 3 {
		if err := r.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if r.Repairs() != 0 || inode(t, f.conf) != inoConf || inode(t, f.bin) != inoBin {
		t.Fatalf("passes over an intact installation wrote: %d repairs", r.Repairs())
	}
	for i := 1; i <= 5; i++ {
		if err := Uninstall(f.o); err != nil { // the old pod's preStop
			t.Fatal(err)
		}
		if err := r.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		f.installed(t, "after uninstall and a pass")
		if r.Repairs() != uint64(i) || f.log.count("re-installed") != i {
			t.Fatalf("repair %d: counter %d, %d log lines", i, r.Repairs(), f.log.count("re-installed"))
		}
	}
	// Only the binary gone: put back, conflist untouched.
	os.Remove(f.bin)
	inoConf = inode(t, f.conf)
	if err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	f.installed(t, "after the binary was removed")
	if inode(t, f.conf) != inoConf || r.Failures() != 0 {
		t.Errorf("conflist rewritten (%v) or failures %d", inode(t, f.conf) != inoConf, r.Failures())
	}
}

func TestReconcilerRepairsForeignRewrite(t *testing.T) {
	f := newKeepFixture(t)
	ctx := context.Background()
	r := f.reconciler(t)
	if err := r.Reconcile(ctx); err != nil { // nothing installed yet: installs
		t.Fatal(err)
	}
	f.installed(t, "first pass")
	// Another plugin's installer rewrites the file, without ambit.
	foreign := []byte(`{"cniVersion":"1.0.0","name":"containerd-net","plugins":[{"type":"bridge","bridge":"cni1"},{"type":"tuning"}]}`)
	if err := writeAtomic(f.conf, foreign, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(f.conf)
	want := `{"cniVersion":"1.0.0","name":"containerd-net","plugins":[{"type":"bridge","bridge":"cni1"},{"type":"tuning"},{"socketPath":"/var/run/ambit/cni.sock","type":"ambit-cni"}]}`
	if string(got) != want {
		t.Fatalf("after a foreign rewrite:\n%s\nwant\n%s", got, want)
	}
	// An earlier conflist becomes the active one: the entry follows it.
	early := filepath.Join(f.o.ConfDir, "05-cilium.conflist")
	if err := os.WriteFile(early, []byte(`{"name":"cilium","plugins":[{"type":"cilium-cni"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if es := ambitEntries(t, early); len(es) != 1 {
		t.Fatalf("new active conflist has %v", es)
	}
	if r.Repairs() != 3 {
		t.Errorf("repairs %d, want 3", r.Repairs())
	}
	// A conflist that is not JSON: a failure, logged once, nothing written.
	if err := os.WriteFile(early, []byte(`{"plugins":[`), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := r.Reconcile(ctx); err == nil {
			t.Fatal("pass over a broken conflist succeeded")
		}
	}
	if b, _ := os.ReadFile(early); string(b) != `{"plugins":[` || r.Failures() != 3 || f.log.count("cannot keep") != 1 {
		t.Errorf("broken conflist: now %q, failures %d, %d log lines", b, r.Failures(), f.log.count("cannot keep"))
	}
}

func TestReconcilerLeavesNewerInstallation(t *testing.T) {
	f := newKeepFixture(t)
	ctx := context.Background()
	old := f.reconciler(t)
	if err := old.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	// The surged pod's init container installs its version.
	newer := f.o
	newer.ExcludeNamespaces = []string{"ambit-system"}
	newer.Binary = filepath.Join(t.TempDir(), "ambit-cni-v2")
	os.WriteFile(newer.Binary, []byte("#!/bin/true\n# v2\n"), 0o700)
	if err := Install(newer); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(f.conf)
	for range 3 {
		if err := old.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if now, _ := os.ReadFile(f.conf); !bytes.Equal(now, after) || old.Repairs() != 1 {
		t.Fatalf("the old reconciler overwrote the newer installation (%d repairs):\n%s", old.Repairs(), now)
	}
	if bin, _ := os.ReadFile(f.bin); !strings.Contains(string(bin), "v2") {
		t.Fatalf("the old reconciler overwrote the newer binary: %q", bin)
	}
	if f.log.count("another installer") != 1 {
		t.Errorf("%d log lines about the newer installation, want 1", f.log.count("another installer"))
	}
	// The newer pod is deleted (its preStop uninstalls): the old one puts
	// its own back.
	if err := Uninstall(newer); err != nil {
		t.Fatal(err)
	}
	if err := old.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	f.installed(t, "after the newer pod uninstalled")
	// A reconciler that starts over a different installation (the one
	// before it) replaces it.
	if err := Install(newer); err != nil {
		t.Fatal(err)
	}
	fresh := f.reconciler(t)
	if err := fresh.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	f.installed(t, "a new reconciler over an older installation")
}

func TestReconcilerStopFile(t *testing.T) {
	f := newKeepFixture(t)
	ctx := context.Background()
	r := f.reconciler(t)
	if err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	// The preStop hook: stop the reconciler, then uninstall.
	if err := StopReconciler(ctx, f.stop); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(f.o); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if es := ambitEntries(t, f.conf); len(es) != 0 || r.Repairs() != 1 {
		t.Fatalf("a stopped reconciler re-installed: %v, %d repairs", es, r.Repairs())
	}
	if _, err := os.Stat(f.bin); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a stopped reconciler put the binary back: %v", err)
	}
	if f.log.count("no longer re-installing") != 1 {
		t.Errorf("stop logged %d times, want 1", f.log.count("no longer re-installing"))
	}
	// A restarted container: its reconciler clears the stop file.
	r.Close()
	r2 := f.reconciler(t)
	if err := r2.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	f.installed(t, "after a restart")
	// A pass in progress holds the lock: StopReconciler waits for it (and
	// gives up when its context ends).
	if err := flock(ctx, r2.lock); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := StopReconciler(short, f.stop); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("StopReconciler while a pass holds the lock = %v, want DeadlineExceeded", err)
	}
	if _, err := os.Stat(f.stop); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stop file written without the lock: %v", err)
	}
}

// TestUninstallReassertAlwaysValid runs uninstalls against a reconciler
// and checks after each step that the conflist parses and keeps the other
// plugins.
func TestUninstallReassertAlwaysValid(t *testing.T) {
	f := newKeepFixture(t)
	ctx := context.Background()
	r := f.reconciler(t)
	check := func(when string) {
		b, err := os.ReadFile(f.conf)
		var list struct {
			Plugins []map[string]any `json:"plugins"`
		}
		if err != nil || json.Unmarshal(b, &list) != nil || len(list.Plugins) < 2 ||
			list.Plugins[0]["type"] != "bridge" || list.Plugins[1]["type"] != "portmap" || len(list.Plugins) > 3 {
			t.Fatalf("%s: conflist %s (%v)", when, b, err)
		}
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(2)
	go func() { // the old pod's preStop, over and over
		defer wg.Done()
		for range 200 {
			Uninstall(f.o)
		}
		close(done)
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			r.Reconcile(ctx)
		}
	}()
	for range 400 {
		check("during uninstall and re-assert")
	}
	wg.Wait()
	if err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	f.installed(t, "after the race")
	if r.Repairs() == 0 {
		t.Error("no repair during the race")
	}
	ents, _ := os.ReadDir(f.o.ConfDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".ambit-cni-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestRunReturnsOnCancel(t *testing.T) {
	f := newKeepFixture(t)
	r := f.reconciler(t)
	ctx, cancel := context.WithCancel(context.Background())
	tick := make(chan time.Time)
	ret := make(chan error, 1)
	go func() { ret <- r.run(ctx, tick) }()
	tick <- time.Time{} // the first pass (at start) is done; a second starts
	tick <- time.Time{} // accepted once the second pass ended: none is running now
	f.installed(t, "first pass")
	if err := Uninstall(f.o); err != nil {
		t.Fatal(err)
	}
	tick <- time.Time{} // starts a pass
	tick <- time.Time{} // accepted once that pass ended
	f.installed(t, "after a tick")
	if r.Repairs() != 2 {
		t.Errorf("repairs %d, want 2", r.Repairs())
	}
	cancel()
	select {
	case err := <-ret:
		if err != nil {
			t.Errorf("run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	// Run with the real ticker: returns at once on an ended context, and
	// when the context ends during the wait.
	if err := r.Run(ctx); err != nil {
		t.Errorf("Run on an ended context: %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	r2, err := NewReconciler(ReconcilerOptions{InstallOptions: f.o, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	go func() { ret <- r2.Run(ctx2) }()
	cancel2()
	select {
	case err := <-ret:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestReconcilerOptions(t *testing.T) {
	binDir, confDir, bin := setupDirs(t)
	for name, o := range map[string]InstallOptions{
		"no binary":     {BinDir: binDir, ConfDir: confDir},
		"absent binary": {BinDir: binDir, ConfDir: confDir, Binary: filepath.Join(binDir, "nope")},
		"no dirs":       {Binary: bin},
		"bad namespace": {BinDir: binDir, ConfDir: confDir, Binary: bin, ExcludeNamespaces: []string{"A"}},
	} {
		if err := KeepInstalled(context.Background(), o, time.Second, nil); err == nil {
			t.Errorf("%s: KeepInstalled accepted %+v", name, o)
		}
	}
}

// BenchmarkReconcileIntact is the cost of a pass that finds everything in
// place (every Interval on every node): lock, stop-file check, a stat of the
// binary, a directory read and one small conflist read and scan.
func BenchmarkReconcileIntact(b *testing.B) {
	binDir, confDir := b.TempDir(), b.TempDir()
	src := filepath.Join(b.TempDir(), "ambit-cni")
	// A binary of the real plugin's order of size: it is hashed once, at
	// start, and not again while its identity is unchanged.
	if err := os.WriteFile(src, bytes.Repeat([]byte{0x7f}, 4<<20), 0o755); err != nil {
		b.Fatal(err)
	}
	orig, _ := os.ReadFile("testdata/10-containerd-net.conflist")
	os.WriteFile(filepath.Join(confDir, "10-containerd-net.conflist"), orig, 0o644)
	r, err := NewReconciler(ReconcilerOptions{InstallOptions: InstallOptions{BinDir: binDir, ConfDir: confDir, Binary: src},
		StopFile: filepath.Join(b.TempDir(), "stop")})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	if err := r.Reconcile(ctx); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := r.Reconcile(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if r.Repairs() != 1 {
		b.Fatalf("repairs %d", r.Repairs())
	}
}

package cniplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func setupDirs(t *testing.T) (binDir, confDir, bin string) {
	t.Helper()
	binDir, confDir = t.TempDir(), t.TempDir()
	bin = filepath.Join(t.TempDir(), "ambit-cni-build")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile("testdata/10-containerd-net.conflist")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-containerd-net.conflist"), orig, 0o644); err != nil {
		t.Fatal(err)
	}
	// A later file is not active and must not be touched.
	if err := os.WriteFile(filepath.Join(confDir, "99-other.conflist"), []byte(`{"plugins":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return binDir, confDir, bin
}

func TestInstallUninstallGolden(t *testing.T) {
	binDir, confDir, bin := setupDirs(t)
	o := InstallOptions{BinDir: binDir, ConfDir: confDir, Binary: bin}
	conf := filepath.Join(confDir, "10-containerd-net.conflist")
	orig, _ := os.ReadFile(conf)
	want, _ := os.ReadFile("testdata/10-containerd-net.conflist.installed")
	for i := range 2 {
		if err := Install(o); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(conf)
		if !bytes.Equal(got, want) {
			t.Fatalf("install #%d:\n%s\nwant:\n%s", i+1, got, want)
		}
	}
	if !json.Valid(want) {
		t.Fatal("golden is not JSON")
	}
	st, err := os.Stat(filepath.Join(binDir, PluginType))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", st, err)
	}
	if other, _ := os.ReadFile(filepath.Join(confDir, "99-other.conflist")); string(other) != `{"plugins":[]}` {
		t.Errorf("inactive conflist changed: %s", other)
	}
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(conf)
	if !bytes.Equal(got, orig) {
		t.Fatalf("uninstall did not restore the file:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(binDir, PluginType)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("binary left: %v", err)
	}
	ents, _ := os.ReadDir(confDir)
	if len(ents) != 2 {
		t.Errorf("conf dir has %d files (temp files left?)", len(ents))
	}
	if err := Uninstall(o); err != nil {
		t.Errorf("second uninstall: %v", err)
	}
}

func TestInstallReplacesOutdatedEntry(t *testing.T) {
	binDir, confDir, bin := setupDirs(t)
	o := InstallOptions{BinDir: binDir, ConfDir: confDir, Binary: bin, SocketPath: "/old.sock"}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	o.SocketPath = ""
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(confDir, "10-containerd-net.conflist"))
	want, _ := os.ReadFile("testdata/10-containerd-net.conflist.installed")
	if !bytes.Equal(got, want) {
		t.Fatalf("got:\n%s", got)
	}
}

func TestInstallRefusesSinglePluginConf(t *testing.T) {
	binDir, confDir, bin := setupDirs(t)
	os.WriteFile(filepath.Join(confDir, "05-single.conf"), []byte(`{"type":"bridge"}`), 0o644)
	err := Install(InstallOptions{BinDir: binDir, ConfDir: confDir, Binary: bin})
	if !errors.Is(err, ErrNoConflist) {
		t.Fatalf("got %v", err)
	}
}

func TestInsertRemoveShapes(t *testing.T) {
	entry := []byte(`{"type":"ambit-cni"}`)
	for _, in := range []string{
		`{"plugins":[]}`,
		`{"plugins":[{"type":"a"}]}`,
		`{"name":"x","plugins":[ {"type":"a"}, {"type":"b"} ],"z":1}`,
		"{\n\t\"plugins\": [\n\t\t{\"type\": \"a\"}\n\t]\n}",
	} {
		out, err := insertPlugin([]byte(in), entry)
		if err != nil || !json.Valid(out) || !bytes.Contains(out, entry) {
			t.Errorf("insert into %s: %s %v", in, out, err)
			continue
		}
		back, err := removePlugin(out)
		if err != nil || string(back) != in {
			t.Errorf("remove from %s: %s %v", out, back, err)
		}
	}
	for _, bad := range []string{`[]`, `{"plugins":{}}`, `{"name":"x"}`, `{"plugins":[`} {
		if _, err := insertPlugin([]byte(bad), entry); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// ambitEntries decodes the conflist at path and returns its ambit-cni
// entries.
func ambitEntries(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("%s is not a conflist: %v\n%s", path, err, b)
	}
	var out []map[string]any
	for _, p := range list.Plugins {
		if p["type"] == PluginType {
			out = append(out, p)
		}
	}
	return out
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestInstallExcludeNamespacesIdempotent(t *testing.T) {
	binDir, confDir, bin := setupDirs(t)
	conf := filepath.Join(confDir, "10-containerd-net.conflist")
	o := InstallOptions{BinDir: binDir, ConfDir: confDir, Binary: bin,
		ExcludeNamespaces: []string{"kube-system", "ambit-system", "kube-system"}}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	es := ambitEntries(t, conf)
	if len(es) != 1 || mustJSON(t, es[0]["excludeNamespaces"]) != `["ambit-system","kube-system"]` {
		t.Fatalf("entries %v, want one excluding [ambit-system kube-system]", es)
	}
	first, _ := os.ReadFile(conf)
	ino := inode(t, conf)
	// The same flags, in another order: nothing is written.
	o.ExcludeNamespaces = []string{"ambit-system", "kube-system"}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(conf); !bytes.Equal(again, first) || inode(t, conf) != ino {
		t.Fatalf("second install rewrote the conflist:\n%s", again)
	}
	// Other values: the entry is updated in place, the rest kept.
	o.ExcludeNamespaces = []string{"ambit", "dns"}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	es = ambitEntries(t, conf)
	if len(es) != 1 || mustJSON(t, es[0]["excludeNamespaces"]) != `["ambit","dns"]` || es[0]["socketPath"] != DefaultSocket {
		t.Fatalf("entries after update %v", es)
	}
	// None: exactly the entry of an install without exclusions.
	o.ExcludeNamespaces = nil
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(conf)
	want, _ := os.ReadFile("testdata/10-containerd-net.conflist.installed")
	if !bytes.Equal(got, want) {
		t.Fatalf("after dropping the exclusions:\n%s\nwant:\n%s", got, want)
	}
}

func TestInstallRefusesBadNamespace(t *testing.T) {
	binDir, confDir, bin := setupDirs(t)
	conf := filepath.Join(confDir, "10-containerd-net.conflist")
	orig, _ := os.ReadFile(conf)
	for _, bad := range []string{"", "Kube-System", "-x", "x-", "a_b", "a.b", strings.Repeat("a", 64)} {
		err := Install(InstallOptions{BinDir: binDir, ConfDir: confDir, Binary: bin, ExcludeNamespaces: []string{"ok", bad}})
		if !errors.Is(err, ErrBadNamespace) {
			t.Errorf("namespace %q: %v, want ErrBadNamespace", bad, err)
		}
	}
	if got, _ := os.ReadFile(conf); !bytes.Equal(got, orig) {
		t.Errorf("a refused install changed the conflist:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(binDir, PluginType)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused install copied the binary: %v", err)
	}
}

func TestParseNamespaceList(t *testing.T) {
	for in, want := range map[string]string{
		"":                             `null`,
		"kube-system":                  `["kube-system"]`,
		" ambit-system , kube-system,": `["ambit-system","kube-system"]`,
		",,a,,":                        `["a"]`,
	} {
		got, err := ParseNamespaceList(in)
		if err != nil || mustJSON(t, got) != want {
			t.Errorf("ParseNamespaceList(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"a b", "UPPER", "a,b_c", "ns."} {
		if _, err := ParseNamespaceList(bad); !errors.Is(err, ErrBadNamespace) {
			t.Errorf("ParseNamespaceList(%q) = %v, want ErrBadNamespace", bad, err)
		}
	}
}

func TestUninstallCleansEveryConflist(t *testing.T) {
	binDir, confDir, bin := setupDirs(t)
	o := InstallOptions{BinDir: binDir, ConfDir: confDir, Binary: bin}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	// Another plugin's installer puts a conflist before ours: the next
	// install chains into it, the old file keeps a stale entry.
	early := filepath.Join(confDir, "05-cilium.conflist")
	if err := os.WriteFile(early, []byte(`{"cniVersion":"1.0.0","name":"cilium","plugins":[{"type":"cilium-cni"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	if len(ambitEntries(t, early)) != 1 {
		t.Fatal("install did not chain into the new active conflist")
	}
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{early, filepath.Join(confDir, "10-containerd-net.conflist")} {
		if es := ambitEntries(t, f); len(es) != 0 {
			t.Errorf("%s keeps %v after uninstall", f, es)
		}
	}
	if other, _ := os.ReadFile(filepath.Join(confDir, "99-other.conflist")); string(other) != `{"plugins":[]}` {
		t.Errorf("a conflist without ambit changed: %s", other)
	}
}

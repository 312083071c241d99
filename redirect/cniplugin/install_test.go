package cniplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
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

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallUninstallFlags(t *testing.T) {
	binDir, confDir := t.TempDir(), t.TempDir()
	conf := filepath.Join(confDir, "10-net.conflist")
	orig := []byte(`{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"}]}`)
	if err := os.WriteFile(conf, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	dirs := []string{"--cni-bin-dir=" + binDir, "--cni-conf-dir=" + confDir}
	install := append([]string{"--exclude-namespaces=kube-system, ambit-system"}, dirs...)
	if rc := installMain("install", install); rc != 0 {
		t.Fatalf("install: exit %d", rc)
	}
	first, _ := os.ReadFile(conf)
	want := `{"excludeNamespaces":["ambit-system","kube-system"],"socketPath":"/var/run/ambit/cni.sock","type":"ambit-cni"}`
	if !strings.Contains(string(first), want) {
		t.Fatalf("conflist after install:\n%s\nwant the entry %s", first, want)
	}
	if rc := installMain("install", install); rc != 0 {
		t.Fatalf("second install: exit %d", rc)
	}
	if again, _ := os.ReadFile(conf); !bytes.Equal(again, first) {
		t.Fatalf("second install changed the conflist:\n%s", again)
	}
	for _, bad := range [][]string{
		{"install", "--exclude-namespaces=Kube"},
		{"install", "stray"},
		{"uninstall", "--exclude-namespaces=a"},
		{"install", "--stop-file=/x"},
	} {
		if rc := installMain(bad[0], append(bad[1:], dirs...)); rc != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)", bad, rc)
		}
	}
	stop := filepath.Join(t.TempDir(), "ambit-cni.stop")
	if rc := installMain("uninstall", append([]string{"--stop-file=" + stop}, dirs...)); rc != 0 {
		t.Fatalf("uninstall: exit %d", rc)
	}
	if got, _ := os.ReadFile(conf); !bytes.Equal(got, orig) {
		t.Errorf("conflist after uninstall:\n%s", got)
	}
	if _, err := os.Stat(stop); err != nil {
		t.Errorf("uninstall --stop-file did not write the stop file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(binDir, "ambit-cni")); err == nil {
		t.Error("binary left after uninstall")
	}
}

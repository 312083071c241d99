package redirect

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// TestApplyRefusesNodeNetns: whatever path offers it (the CNI socket, the
// enrolment of running pods), the Manager never captures the daemon's own
// network namespace or the node's (Options.HostNetns), by path or by
// descriptor, and keeps no state for the attempt.
func TestApplyRefusesNodeNetns(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	host, hostPath := newNetns(t, dir, "node")
	stateDir := t.TempDir()
	m, err := New(context.Background(), Options{PinDir: filepath.Join(mountBPFFS(t), "ambit"), StateDir: stateDir,
		HostNetns: host, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Uninstall(context.Background()); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	self, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	addrs := []netip.Addr{netip.MustParseAddr("10.9.0.2")}
	for name, pod := range map[string]PodNetns{
		"daemon's own by path":       {ID: "own-path", NetnsPath: "/proc/self/ns/net", Interface: "eth0", Addresses: addrs},
		"daemon's own by descriptor": {ID: "own-fd", NetnsPath: "/proc/self/ns/net", Netns: self, Interface: "eth0", Addresses: addrs},
		"host's by path":             {ID: "host-path", NetnsPath: hostPath, Interface: "eth0", Addresses: addrs},
		"host's by descriptor":       {ID: "host-fd", NetnsPath: hostPath, Netns: host, Interface: "eth0", Addresses: addrs},
	} {
		if err := m.Apply(context.Background(), pod, Config{}); !errors.Is(err, ErrNodeNetns) {
			t.Errorf("%s: Apply = %v, want ErrNodeNetns", name, err)
		}
		if _, err := m.Listeners(pod.ID); err == nil {
			t.Errorf("%s: the Manager holds listeners for it", name)
		}
	}
	if ents, _ := os.ReadDir(stateDir); len(ents) != 0 {
		t.Errorf("state kept for refused namespaces: %v", ents)
	}
}

//go:build linux

package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Each node's kubelet, containerd and kube-proxy share a private mount
// namespace (a slave of the host's, so they see the host's files) in which the
// node's own directories are bind-mounted on the standard paths. Two nodes on
// one machine would otherwise share /var/log/pods (each kubelet garbage
// collects the other's pod logs), host-local's IP store, the CNI directories
// that a DaemonSet installs into through hostPath, and containerd's shim
// sockets. Every mount a kubelet or containerd makes (volumes, rootfs
// overlays, sandbox netns files) stays in that namespace and vanishes with it.
var nodePrivateDirs = []string{
	"/var/lib/kubelet",
	"/var/lib/containerd",
	"/run/containerd",
	"/var/log/pods",
	"/var/log/containers",
	"/etc/cni/net.d",
	"/opt/cni/bin",
	"/var/lib/cni",
}

// kubelet writes these kernel sysctls at start (vm.overcommit_memory=1,
// kernel.panic=10, kernel.panic_on_oops=1, ...). They are global to the
// machine, so in a node's mount namespace each is covered by a regular file
// holding the host's value: the kubelet reads and writes its copy.
var shieldedSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// makePrivateDir bind-mounts dir onto itself with private propagation, so
// namespace files can be bind-mounted into it (a requirement of unshare
// --mount=<file>).
func makePrivateDir(dir string) error {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make-private %s: %w", dir, err)
	}
	return nil
}

// newMountNS creates a persistent mount namespace at file (in a private
// directory) and sets up a node's private directories and sysctl shields in
// it. backing is the node's directory holding the private dirs' contents.
// created collects host directories created as mount points, for teardown.
//
// The namespace's mounts are made shared (as / is on a systemd host), so
// mounts the runtime makes later (pod network namespaces) propagate into
// containers that mount those paths with HostToContainer propagation; they
// stay slaves of the host's, so nothing propagates back to the machine.
// With netnsFile set, the node's network namespace (netnsPath) is
// bind-mounted there (see Options.NodeNetnsFile).
func newMountNS(ctx context.Context, file, backing string, extra []string, netnsFile, netnsPath string, created *[]string) error {
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		return err
	}
	if _, err := run(ctx, "unshare", "--mount="+file, "--propagation", "slave", "true"); err != nil {
		return fmt.Errorf("mount namespace: %w", err)
	}
	var script []string
	dirs := append(append([]string{}, nodePrivateDirs...), extra...)
	if netnsFile != "" {
		dirs = append(dirs, filepath.Dir(netnsFile))
	}
	for _, d := range dirs {
		src := filepath.Join(backing, strings.ReplaceAll(strings.Trim(d, "/"), "/", "_"))
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			if err := mkdirRecord(d, created); err != nil {
				return err
			}
		}
		script = append(script, fmt.Sprintf("mount --bind %q %q", src, d))
	}
	sysDir := filepath.Join(backing, "sysctl")
	if err := os.MkdirAll(sysDir, 0o755); err != nil {
		return err
	}
	for _, s := range shieldedSysctls {
		host := filepath.Join("/proc/sys", s)
		v, err := os.ReadFile(host)
		if err != nil {
			continue
		}
		f := filepath.Join(sysDir, strings.ReplaceAll(s, "/", "."))
		if err := os.WriteFile(f, v, 0o644); err != nil {
			return err
		}
		script = append(script, fmt.Sprintf("mount --bind %q %q", f, host))
	}
	// A node's own bpffs, so pinned programs and maps of two node daemons do
	// not collide.
	if st, err := os.Stat("/sys/fs/bpf"); err == nil && st.IsDir() {
		script = append(script, "mount -t bpf bpf /sys/fs/bpf")
	}
	if netnsFile != "" {
		script = append(script, fmt.Sprintf("touch %q", netnsFile), fmt.Sprintf("mount --bind %q %q", netnsPath, netnsFile))
	}
	script = append(script, "mount --make-rshared /")
	if _, err := run(ctx, "nsenter", "--mount="+file, "--", "sh", "-ec", strings.Join(script, "\n")); err != nil {
		return fmt.Errorf("node mounts: %w", err)
	}
	return nil
}

// mkdirRecord creates dir and records each directory it had to create.
func mkdirRecord(dir string, created *[]string) error {
	var missing []string
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Deepest first, the order teardown removes them in.
	*created = append(*created, missing...)
	return nil
}

// unmountUnder detaches every mount at or below dir in the host namespace,
// deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mnts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		m := unescapeMount(fields[4])
		if m == dir || strings.HasPrefix(m, dir+"/") {
			mnts = append(mnts, m)
		}
	}
	f.Close()
	sort.Slice(mnts, func(i, j int) bool { return len(mnts[i]) > len(mnts[j]) })
	var errs []error
	for _, m := range mnts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount decodes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

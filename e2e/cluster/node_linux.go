//go:build linux

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Node is one kubelet with its own containerd, kube-proxy, network namespace
// and mount namespace.
type Node struct {
	Name    string     // Kubernetes node name
	IP      net.IP     // the node's address (eth0 in its network namespace)
	PodCIDR *net.IPNet // allocated by kube-controller-manager
	NetNS   string     // network namespace file, for nsenter --net
	MountNS string     // mount namespace file, for nsenter --mount
	Dir     string     // the node's directory in the run's work dir

	// Host paths backing the node's standard directories (inside the node's
	// mount namespace these are /run/containerd/containerd.sock,
	// /etc/cni/net.d and /opt/cni/bin).
	ContainerdSocket string
	CNIConfDir       string
	CNIBinDir        string

	index     int
	netnsName string
	procs     []*proc
}

// PrivateDir returns the host path backing path (one of the node's private
// directories, e.g. "/var/lib/kubelet") for this node.
func (n *Node) PrivateDir(path string) string {
	return filepath.Join(n.Dir, "fs", strings.ReplaceAll(strings.Trim(path, "/"), "/", "_"))
}

// Command returns a command that runs in the node's network and mount
// namespaces (for example tcpdump on the node's interfaces, or ctr).
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	a := append([]string{"--net=" + n.NetNS, "--mount=" + n.MountNS, "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", a...)
}

// Exec runs a command in the node's namespaces and returns its combined output.
func (n *Node) Exec(ctx context.Context, name string, args ...string) (string, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("node %s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

const containerdConfig = `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0

[grpc]
  address = "/run/containerd/containerd.sock"

[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # This machine kind forbids lowering oom_score_adj; without this every
  # sandbox fails with runc's "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
`

const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: %q
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: %q
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %q
tlsPrivateKeyFile: %q
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %q
authorization:
  mode: Webhook
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# Imported images cannot be pulled again: never garbage-collect them, and do
# not evict pods because a shared test machine's disk is fuller than usual.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
maxPods: 60
%s`

const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
hostnameOverride: %q
mode: iptables
clusterCIDR: %q
bindAddress: %q
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# nf_conntrack_max and the TCP timeouts are global to the machine: leave them.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`

// prepareNode creates node i's (1-based) network and mount namespaces and
// records them in the run state. Nodes are prepared one after the other
// (they create shared host mount points); startNode then runs in parallel.
func (c *Cluster) prepareNode(ctx context.Context, i int) (*Node, error) {
	n := &Node{
		Name:      fmt.Sprintf("%s%d", c.opts.NodeNamePrefix, i),
		IP:        nthIP(c.net.cidr, 10+i),
		Dir:       filepath.Join(c.WorkDir, fmt.Sprintf("n%d", i)),
		NetNS:     netnsPath(netnsName(i)),
		index:     i,
		netnsName: netnsName(i),
	}
	n.MountNS = filepath.Join(c.WorkDir, "ns", fmt.Sprintf("n%d.mnt", i))
	n.ContainerdSocket = filepath.Join(n.PrivateDir("/run/containerd"), "containerd.sock")
	n.CNIConfDir = n.PrivateDir("/etc/cni/net.d")
	n.CNIBinDir = n.PrivateDir("/opt/cni/bin")
	c.state.NetNS = append(c.state.NetNS, n.netnsName)
	c.state.MountNS = append(c.state.MountNS, n.MountNS)
	if err := c.saveState(); err != nil {
		return nil, err
	}

	if err := setupNodeNet(ctx, c.net, i, n.IP); err != nil {
		return nil, err
	}
	if err := newMountNS(ctx, n.MountNS, filepath.Join(n.Dir, "fs"), c.opts.NodePrivateDirs, c.opts.NodeNetnsFile, n.NetNS, &c.state.CreatedDirs); err != nil {
		return nil, err
	}
	if err := c.saveState(); err != nil {
		return nil, err
	}
	return n, nil
}

// startNode starts containerd (importing the images), kubelet and kube-proxy
// in node n's namespaces. The CNI configuration follows once the node has a
// pod CIDR (configureCNI).
func (c *Cluster) startNode(ctx context.Context, n *Node) error {
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if err := copyFile(c.bin(filepath.Join("cni", p)), filepath.Join(n.CNIBinDir, p), 0o755); err != nil {
			return err
		}
	}
	sub := fmt.Sprintf("n%d", n.index)
	cgRoot := "/" + c.cg.name + "/" + sub
	if err := c.cg.ensureRoot(sub); err != nil {
		return err
	}

	// containerd
	cfg := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, containerdConfig, PauseImage), 0o644); err != nil {
		return err
	}
	ctrd, err := c.startIn(n, procSpec{name: n.Name + "-containerd", path: "containerd", args: []string{"--config", cfg}})
	if err != nil {
		return err
	}
	if err := waitFor(ctx, n.Name+" containerd socket", 100*time.Millisecond, []*proc{ctrd}, func(ctx context.Context) error {
		_, err := run(ctx, "ctr", "--address", n.ContainerdSocket, "version")
		return err
	}); err != nil {
		return err
	}
	for _, img := range c.images {
		if err := n.importImage(ctx, img); err != nil {
			return err
		}
	}

	// kubelet
	serving, err := c.pki.issue(n.Name+"-serving", "system:node:"+n.Name, []string{"system:nodes"}, []string{n.Name}, []net.IP{n.IP}, true)
	if err != nil {
		return err
	}
	kcfg := filepath.Join(n.Dir, "kubelet.yaml")
	dns := ""
	if !c.opts.NoDNS {
		dns = fmt.Sprintf("clusterDomain: %s\nclusterDNS:\n- %s\n", ClusterDomain, c.dnsIP())
	}
	if err := os.WriteFile(kcfg, fmt.Appendf(nil, kubeletConfig, cgRoot, n.IP.String(), serving.Cert, serving.Key, c.pki.CAFile, dns), 0o644); err != nil {
		return err
	}
	kubeconfig, err := c.componentKubeconfig(n.Name+"-kubelet", "system:node:"+n.Name, []string{"system:nodes"})
	if err != nil {
		return err
	}
	if _, err := c.startIn(n, procSpec{name: n.Name + "-kubelet", path: c.bin("kubelet"), args: []string{
		"--config=" + kcfg,
		"--kubeconfig=" + kubeconfig,
		"--root-dir=/var/lib/kubelet",
		"--hostname-override=" + n.Name,
		"--node-ip=" + n.IP.String(),
		"--v=1",
	}}); err != nil {
		return err
	}

	// kube-proxy: Service ClusterIPs (pods reach the API server through the
	// kubernetes Service as on any cluster).
	pk, err := c.componentKubeconfig(n.Name+"-kube-proxy", "system:kube-proxy", nil)
	if err != nil {
		return err
	}
	pcfg := filepath.Join(n.Dir, "kube-proxy.yaml")
	if err := os.WriteFile(pcfg, fmt.Appendf(nil, kubeProxyConfig, pk, n.Name, c.podCIDR.String(), n.IP.String()), 0o644); err != nil {
		return err
	}
	if _, err := c.startIn(n, procSpec{name: n.Name + "-kube-proxy", path: c.bin("kube-proxy"), args: []string{
		"--config=" + pcfg, "--v=1",
	}}); err != nil {
		return err
	}
	return nil
}

// startIn starts a component in node n's namespaces.
func (c *Cluster) startIn(n *Node, spec procSpec) (*proc, error) {
	spec.netns, spec.mntns = n.NetNS, n.MountNS
	p, err := c.start(spec)
	if err == nil {
		n.procs = append(n.procs, p)
	}
	return p, err
}

// configureCNI writes the node's CNI configuration: the upstream bridge
// plugin on cni0 with host-local addresses from the node's pod CIDR, no
// masquerading (pods see each other's real addresses), and loopback.
func (n *Node) configureCNI() error {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "ambit-e2e",
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      "cni0",
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": n.PodCIDR.String()}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(n.CNIConfDir, ".10-ambit-e2e.conflist.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(n.CNIConfDir, "10-ambit-e2e.conflist"))
}

// importImage loads an image tarball into the node's containerd, in the
// namespace the kubelet uses.
func (n *Node) importImage(ctx context.Context, tarPath string) error {
	if _, err := run(ctx, "ctr", "--address", n.ContainerdSocket, "-n", "k8s.io", "images", "import", tarPath); err != nil {
		return fmt.Errorf("node %s: import %s: %w", n.Name, tarPath, err)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Package cluster starts a real Kubernetes cluster on this machine for
// ambit's end-to-end tests, and removes every trace of it afterwards.
//
// # What runs
//
// From binaries built by e2e/hack/build-bins.sh into the git-ignored bin/
// (Kubernetes v1.34.3, etcd v3.5.35, CNI plugins v1.9.1, and kubectl and
// helm v3.22.0 for tests that drive the cluster as a user would), plus Debian's
// containerd and runc (e2e/hack/install-deps.sh):
//
//   - etcd on free 127.0.0.1 ports;
//   - kube-apiserver on https://172.31.250.1:6443 (the host bridge), with a
//     throw-away CA, client-certificate users, RBAC and Node authorization,
//     NodeRestriction, privileged pods allowed, ServiceAccount issuer
//     ServiceAccountIssuer with a generated RSA key (TokenRequest and
//     TokenReview work);
//   - kube-controller-manager (ServiceAccounts, kube-root-ca.crt,
//     Deployments, DaemonSets, node pod CIDRs) and kube-scheduler;
//   - cluster DNS: CoreDNS (v1.14.7, built likewise) as kube-dns in
//     kube-system, answering for cluster.local (Options.NoDNS skips it);
//   - per node (two by default): containerd, kubelet and kube-proxy, in the
//     node's own network namespace (eth0 172.31.250.1x on the host bridge)
//     and own mount namespace, with pods on the upstream bridge CNI plugin
//     (cni0, host-local addresses from the node's pod CIDR, no NAT) and
//     routes between the nodes' pod CIDRs.
//
// Images need no Docker and no registry: WriteImageTar and BuildGoImage make
// one-layer images from static binaries with go-containerregistry, and
// ImportImage loads them with `ctr -n k8s.io images import`. Pods use
// imagePullPolicy: Never. The sandbox image (PauseImage) is built from
// e2e/apps/pause the same way.
//
// # API
//
//	opts := cluster.Options{Images: []string{echoTar}} // zero value: 2 nodes
//	cluster.SkipIfUnavailable(t, opts) // not root / not built: skip (fail if AMBIT_E2E_REQUIRE=1)
//	c, err := cluster.Start(ctx, t, opts) // Stop registered with t.Cleanup
//	cs := c.Clientset()                   // or c.RESTConfig(), c.Kubeconfig for kubectl/helm
//	c.Nodes[0].Name, .IP, .PodCIDR, .Exec(ctx, "tcpdump", ...) // node namespaces
//	c.ImportImage(ctx, tar)               // every node
//	c.WaitPods(ctx, ns, "app=x", 2, cluster.PodReady)
//	c.PodLogs(ctx, ns, pod, container)
//	c.LogPath("node-1-kubelet")           // component logs
//	c.Kubectl(ctx, "get", "pods", "-A")   // bin/kubectl; c.Helm(ctx, "install", ...) likewise
//	c.WaitService(ctx, ns, "svc", 2)      // endpoints ready and kube-proxy rules on every node
//	cp, _ := c.Nodes[0].StartCapture(ctx, "eth0", "tcp") // tcpdump in the node's netns
//	text, _ := cp.Stop(ctx)               // packets with ASCII payloads (search for a marker)
//	c.Stop(); c.Leftovers()               // Stop is idempotent; Leftovers must be empty after it
//
// # Design
//
// Two nodes on one machine are honest only if they share nothing a real
// pair of nodes would not: each node has its own network namespace and
// address, its own containerd (root, state, socket, shims), its own kubelet
// (root dir, cgroup root /ambit-e2e-<run>/n<i>) and kube-proxy. They share the
// kernel. A node's kubelet, containerd and kube-proxy run in a mount namespace
// of the node in which the node's own directories are bind-mounted over the
// standard paths (/var/lib/kubelet, /var/lib/containerd, /run/containerd,
// /var/log/pods, /etc/cni/net.d, /opt/cni/bin, /var/lib/cni, a fresh bpffs
// on /sys/fs/bpf, plus Options.NodePrivateDirs): without that, one kubelet
// garbage-collects the other's pod logs, and a DaemonSet installing a CNI
// plugin through a hostPath would install into both nodes at once. The
// kubelet's writes to global kernel sysctls (kernel.panic_on_oops=1, ...)
// land on per-node files bind-mounted over /proc/sys in that namespace, so
// the test machine keeps its settings.
//
// Nothing is left behind: every process joins a cgroup below
// /ambit-e2e-<run> before it execs (so containerd's daemonised shims and the
// containers are found too), and Stop SIGKILLs everything there, unmounts the
// namespace files (which drops every kubelet and containerd mount at once),
// deletes the network namespaces and the bridge, removes the cgroups and the
// mount points it had to create, and deletes the run directory, keeping the
// logs in <BaseDir>/last-logs. What a run creates is recorded in its
// state.json, and Start first reaps any run a crashed test left, in this
// checkout or another one (found by the namespace files it pinned), and any
// node veth still holding a name the run needs. Only one cluster runs per
// machine (a lock file outside any checkout); a second Start waits.
//
// containerd runs with restrict_oom_score_adj = true because this machine
// kind forbids lowering oom_score_adj (every sandbox fails otherwise), and
// the kubelet with failCgroupV1: false because the machine has cgroup v1.
package cluster

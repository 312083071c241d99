// Package redirect captures the TCP traffic of enrolled pods inside each
// pod's own network namespace with eBPF (programs from package bpf, loaded
// with cilium/ebpf) and netlink, without iptables. Sub-packages: cnimsg
// (plugin<->daemon protocol), cniplugin (the ambit-cni plugin and its
// installer), cniserver (the daemon's side of the CNI socket).
//
// Outbound: cgroup connect4/6 programs at the cgroup v2 root rewrite a
// connect() from an enrolled netns to the pod's outbound listener on
// loopback; OriginalDst recovers the app's destination, getpeername and
// getsockname hooks hide the rewrite (the app sees its destination as its
// peer and its pod address, not 127.0.0.1, as its own). Inbound: an sk_lookup program per pod netns steers TCP
// to a pod address into the HBONE or plaintext listener, which sit in one
// node-wide pinned sockmap. Per-pod tc filters drop new TCP connections
// that escape capture and forged probe sources.
//
// # Contract
//
//   - Manager.Apply(ctx, pod, desired) is declarative and idempotent;
//     Remove leaves nothing; Manager.State renders the kernel state as text.
//   - Capture fails closed: links, maps and filters are pinned or live on
//     devices and outlive the process; with no listener, captured
//     connections are refused or dropped, never sent in plaintext.
//   - A new process takes over with New + Recover: its listeners replace
//     the old ones in the sockmap atomically (no new connection lands on
//     none); the old process should drain its accept queue before closing
//     its listeners.
//
// # Pitfalls
//
//   - Namespaces are entered only on goroutines locked to their OS thread;
//     a thread whose namespace cannot be restored is never unlocked.
//     Sockets keep the namespace they were created in: create listeners and
//     dial (Manager.Dial) that way, never setns on a shared thread.
//   - Sockets from inside a pod that must not be captured carry ambit's
//     mark (DefaultMark).
//   - Listeners must not use MPTCP (the sockmap refuses it); MPTCP connects
//     from enrolled pods are refused.
//
// Design, failure modes and measurements: docs/capture.md.
package redirect

// Package bpf holds ambit's eBPF programs (C sources, their bpf2go-generated
// Go bindings and committed objects) and a small loader API. It only loads
// programs and maps; attaching, pinning and reconciliation live in
// package redirect.
//
// Two objects:
//
//   - capture (capture.c): loaded once per node and attached at the cgroup v2
//     root. cgroup/connect4 and connect6 rewrite the destination of TCP
//     connects made in enrolled network namespaces (keyed by netns cookie
//     in the pods map) to the outbound listener inside that namespace and
//     keep the original destination in socket storage; sockops publishes
//     it under the client's (netns, address, port) once the source port is
//     chosen, which is what ambit's accepted socket sees; getpeername4/6
//     hide the rewrite from the app, and getsockname4/6 answer the pod's
//     own address (map pod_addrs) instead of the loopback it connected from.
//   - pod (pod.c): loaded per enrolled pod with that pod's constants:
//     sk_lookup (inbound steering to 15008/15006 and the outbound listener,
//     via the node-wide sockmap of ambit's listeners, NewListenersMap), tc egress default deny of
//     uncaptured new connections, tc ingress anti-spoofing of the pod's
//     own addresses, and a host-side tc program that keeps forwarded
//     packets from using the kubelet probe exemption.
//
// Regenerate with `go generate ./bpf` (needs clang, llvm-strip and libbpf
// headers from Debian: clang llvm libbpf-dev). The generated files are
// committed so that `go build` needs no clang.
package bpf

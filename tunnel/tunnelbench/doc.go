// Package tunnelbench measures what HBONE costs. It runs the same workloads
// through three paths on this machine and reports each figure beside the
// others:
//
//   - direct: the app connects straight to the backend (plain TCP);
//   - mtls: the app connects to a local client splice that opens a mutual TLS
//     1.3 connection (go-spiffe verification, one TLS session per proxied
//     connection) to a server splice that dials the backend: tls.Conn plus
//     io.Copy each way, the floor of what any TLS tunnel costs;
//   - hbone: the app connects to a local client splice that opens a CONNECT
//     stream through a pooled tunnel.Client to a tunnel.Server, which dials
//     the backend.
//
// The mtls and hbone paths have the same shape (app, client endpoint, server
// endpoint, backend, all on loopback), so their difference is the cost of
// HTTP/2 framing, pooling and ambit's own code. Everything runs in one
// process; the workloads, their sizes and what each figure means are
// documented on Workloads and Result.
package tunnelbench

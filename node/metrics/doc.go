// Package metrics provides the node daemon's Prometheus metrics and its
// per-connection access log.
//
// Everything registers on the Registry owned by a Metrics value, never on
// the client library's global registry, so tests and several daemons in
// one process (the netns e2e tier) do not collide.
//
// # Connections
//
// TunnelHooks returns a tunnel.Hooks that counts every connection twice:
//
//   - Istio's standard TCP metrics with ztunnel's names, help, labels and
//     values (istio_tcp_connections_opened_total, _closed_total,
//     _failed_total, istio_tcp_sent_bytes_total, _received_bytes_total;
//     reporter, source_/destination_ workload, workload_namespace,
//     principal as spiffe://..., app and version (the canonical service and
//     revision, as ztunnel reports them), canonical_service,
//     canonical_revision, cluster, destination_service(_name,_namespace),
//     request_protocol, response_flags, connection_security_policy), so
//     Istio's dashboards and Kiali read them unchanged. As ztunnel, every
//     connection handled is opened and closed, a failed one also failed;
//     received bytes are the request direction, sent the response one.
//   - ambit_tcp_* with ambit's richer response flags (RESET, REVOKED,
//     BAD_REQUEST, ...) and a direction label: opened when established,
//     closed when an established one ends, failed when it ended before.
//
// connection_security_policy is mutual_tls through the tunnel once both
// identities are verified, "none" for a connection carried in plaintext
// (Istio's value; ztunnel says "unknown"), "unknown" when a tunnel failed
// before that. docs/telemetry.md maps every value.
//
// Bytes are counted while a connection is open: OnStart keeps the
// connection's tunnel.ConnInfo.Live, and Gather (every scrape) adds what
// each open connection carried since the last flush, so rate() is right
// at any moment; OnEnd adds what is left. A connection's bytes stay in the
// series it was opened under (response_flags "-"), as ztunnel counts them.
//
// Label values are bounded by construction: principals come from verified
// SPIFFE IDs (bounded by the identities talking to this node), workload,
// namespace and Service names from the node's tables (a Service a peer
// names is believed only when the destination is its endpoint), response_flags from the tunnel's Outcome constants, and no label
// ever carries an address or a port number (those go to the access log
// only; a workload or service name from Config.Workloads that parses as
// an address is reported as "unknown"). On top of that a hard cap bounds the number of distinct label
// sets (Config.MaxSeries, default 10,000): beyond it new label sets have
// their principals and workload names collapsed to "other", and if even
// that would grow the
// set beyond the cap plus a reserve, every workload label is "other". Each
// collapsed connection counts in ambit_metrics_label_overflow_total.
//
// The hook resolves a connection's label set through a map keyed by the
// label values that keeps the resolved counters, so the client library's
// label hashing (WithLabelValues) runs once per label set, not once per
// connection; and it caches each SPIFFE ID's namespace, because
// BenchmarkHooks showed identity.ParseWorkload at 75% of the cost and all
// 20 allocations: with the cache the metrics part of a connection (OnStart
// + OnEnd, RunParallel on 2 cores) went from 1.7 us and 20 allocations to
// 0.26 us and none; on one core (`go test -bench Hooks -cpu 1
// ./node/metrics`) it was about 0.5 us with the ambit_ metrics alone; the
// Istio label sets doubled the key hashed per lookup. The JSON access log line adds
// about 4 us and 5 allocations on one core, the cost of slog's JSON
// encoding.
//
// # Node state
//
// Scrape-time collectors read the node's state through plain functions
// given in Config (certificates from identity.Manager.Snapshot, informer
// sync state, enrolled pods), so the values are never stale and this
// package depends on no table or watch implementation. Metrics also
// implements identity.Observer for certificate request outcomes.
package metrics

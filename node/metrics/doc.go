// Package metrics provides the node daemon's Prometheus metrics and its
// per-connection access log.
//
// Everything registers on the Registry owned by a Metrics value, never on
// the client library's global registry, so tests and several daemons in
// one process (the netns e2e tier) do not collide.
//
// # Connections
//
// TunnelHooks returns a tunnel.Hooks that counts connections opened (when a
// stream is established), closed (ended after being established) and failed
// (ended before being established: DENY, CONNECT, TLS_FAILURE,
// IDENTITY_ERROR, BAD_REQUEST, UPSTREAM_REFUSED), and bytes each way, and
// writes one access log line per connection. The labels follow Istio's TCP
// metrics (reporter, source/destination workload, namespace, principal
// and app, destination_service, direction, connection_security_policy,
// response_flags) so existing dashboards need only the metric prefix
// changed.
//
// Label values are bounded by construction: principals and namespaces come
// from verified SPIFFE IDs (bounded by the identities talking to this
// node), response_flags from the tunnel's Outcome constants, and no label
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
// ./node/metrics`) it is about 0.5 us. The JSON access log line adds
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

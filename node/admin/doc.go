// Package admin provides the node daemon's HTTP surfaces other than the
// metrics themselves: readiness (:15021/healthz/ready), the local admin
// server (localhost:15000: /config_dump, /connections, /logging,
// /debug/pprof/), the
// mux for the metrics port (:15020: /metrics and /stats/prometheus), and
// Serve, which runs any of them until its context ends and then shuts down
// gracefully.
//
// The pieces know nothing of the tables, the watches or the capture: the
// daemon registers named functions (readiness checks returning an error,
// config_dump sections returning any JSON-encodable value) so each part of
// the daemon reports on itself and this package stays a thin, testable
// layer.
//
// The admin server exposes internal state and profiling, so New refuses an
// address that is not loopback unless Config.AllowNonLoopback says so; an
// empty host (":15000") binds every interface and is refused too. pprof
// handlers are mounted on the admin mux, never on http.DefaultServeMux,
// so nothing else in the process can expose them by accident.
//
// /connections serves whatever Config.Connections returns (the daemon
// gives node/connections.Table.SnapshotAny: addresses, identities,
// policy and age of each live connection, never key material); cmd/ambitctl
// reads it and the config_dump sections.
//
// Certificates appear in config_dump only as identity.CertInfo (serials,
// validity, state): CertificatesSection reads identity.Manager.Snapshot,
// which holds no key material, and a test greps a real Manager's dump for
// the key.
package admin

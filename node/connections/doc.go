// Package connections provides the node daemon's table of live proxied
// connections, fed by tunnel.Hooks and served by the admin endpoint at
// /connections (see node/admin.Config.Connections and cmd/ambitctl).
//
// # Wiring
//
// Table.Hooks wraps the hooks the daemon already uses (metrics, access
// log) so one tunnel.Hooks value feeds both:
//
//	tbl, _ := connections.New(connections.Config{Logger: log, Registerer: m.Registry(),
//		Workload: connections.LocalWorkload(lookup)}) // lookup: pod address -> "namespace/name"
//	hooks := tbl.Hooks(m.NodeHooks())
//	adm, _ := admin.New(admin.Config{..., Connections: tbl.SnapshotAny})
//
// OnStart records a connection (it is established: bytes may flow); OnEnd
// removes it. A connection that fails before it is established gets only
// OnEnd from the tunnel and never appears.
//
// # Design
//
// Entries are keyed by the *tunnel.ConnInfo the tunnel passes to both
// hooks of one connection: the pointer is used as an identity only and
// never dereferenced after the hook returns (the tunnel's contract forbids
// keeping what it points to). Each entry copies the few fields the
// endpoint shows (direction, addresses, identities, policy, start, the
// local workload's name); it holds nothing secret, because ConnInfo holds
// nothing secret: no key, no certificate, no header beyond the bounded
// ones the access log already prints, and the table copies none of those.
//
// The map is split into shards chosen by a hash of the pointer, so the two
// hooks of concurrent connections rarely wait on one another; a global
// atomic count enforces the cap (Config.MaxEntries, default 10,000). A
// connection started while the table is full is not recorded: it is still
// proxied, metered and logged as usual, and it counts in Dropped
// (ambit_connections_table_dropped_total); the first drop logs one
// warning. The cap bounds memory at roughly 250 bytes per entry plus the
// map overhead, about 3 to 4 MB at the default.
//
// The tunnel counts bytes on the stream and hands the totals to OnEnd
// only, so the table cannot show bytes of a live connection; the access
// log line has them when the connection ends.
//
// # Cost
//
// `go test -run '^$' -bench . -benchmem -cpu 1,2 ./node/connections` on
// the 2-core development machine, two runs under other load: one
// connection's OnStart plus OnEnd (BenchmarkHooks, table holding 1,000
// others) costs 0.5 to 0.7 us and one 224-byte allocation (the entry) on
// one core, 0.5 to 1 us per pair with two cores contending; the metrics
// hooks cost about 0.3 us for comparison. A snapshot of a full table
// (BenchmarkSnapshot, 10,000 entries) takes 12 to 29 ms and 4.4 MB, mostly
// formatting addresses and identities after the shards are unlocked.
package connections

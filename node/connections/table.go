package connections

import (
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/tunnel"
)

// DefaultMaxEntries is the default cap on tracked connections.
const DefaultMaxEntries = 10000

const shards = 32

// Config configures a Table. Every field is optional.
type Config struct {
	// MaxEntries caps the connections tracked at once. Optional, default
	// DefaultMaxEntries; negative is an error.
	MaxEntries int
	// Workload names the local workload of a connection ("namespace/name"
	// of the pod on this node: the destination of an inbound connection,
	// the source of an outbound one). Called once per connection from
	// OnStart, on the connection's goroutine: it must be fast and safe for
	// concurrent use. Optional: without it the workload is empty.
	Workload func(*tunnel.ConnInfo) string
	// Now is the clock for a connection's age in Snapshot. Optional,
	// default time.Now.
	Now func() time.Time
	// Logger receives one warning when the table first drops a
	// connection. Optional, default discard.
	Logger *slog.Logger
	// Registerer receives ambit_connections_table_dropped_total and
	// ambit_connections_table_entries. Optional.
	Registerer prometheus.Registerer
}

// Conn is one live connection as the admin endpoint shows it. It holds
// addresses, identities and names only, never key material.
type Conn struct {
	ID        uint64 `json:"id"`        // order of arrival in this table
	Direction string `json:"direction"` // "inbound" or "outbound"
	// SourceAddr is the client's address (inbound: the peer of the tunnel;
	// outbound: the captured pod's address), DestinationAddr the address
	// the client asked for, TunnelAddr the HBONE listener.
	SourceAddr          string    `json:"source_addr,omitempty"`
	DestinationAddr     string    `json:"destination_addr,omitempty"`
	TunnelAddr          string    `json:"tunnel_addr,omitempty"`
	Workload            string    `json:"workload,omitempty"`
	SourceIdentity      string    `json:"source_identity,omitempty"`
	DestinationIdentity string    `json:"destination_identity,omitempty"`
	Policy              string    `json:"policy,omitempty"`
	Start               time.Time `json:"start"`
	AgeSeconds          float64   `json:"age_seconds"`
	// BytesSent and BytesReceived are the bytes carried so far towards
	// the destination and from it (tunnel.ConnInfo.Live, read when the
	// snapshot is taken; 0 when the data path does not report them).
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
}

// Snapshot is the table at one moment, as served at /connections.
type Snapshot struct {
	// Active is the number of connections listed.
	Active int `json:"active"`
	// Capacity is the table's cap (Config.MaxEntries).
	Capacity int `json:"capacity"`
	// Dropped counts connections not recorded because the table was full,
	// since the table was created.
	Dropped uint64 `json:"dropped"`
	// Connections are sorted by start time, oldest first.
	Connections []Conn `json:"connections"`
}

type entry struct {
	id               uint64
	dir              tunnel.Direction
	src, dst, tun    netip.AddrPort
	srcID, dstID     spiffeid.ID
	policy, workload string
	start            time.Time
	live             func() (int64, int64)
}

type shard struct {
	mu sync.Mutex
	m  map[*tunnel.ConnInfo]entry
}

// Table is a bounded table of live connections. Safe for concurrent use.
type Table struct {
	cfg      Config
	seed     maphash.Seed
	shards   [shards]shard
	count    atomic.Int64 // entries in all shards (and reservations)
	nextID   atomic.Uint64
	dropped  atomic.Uint64
	warned   atomic.Bool
	droppedC prometheus.Counter
}

// New returns an empty Table.
func New(cfg Config) (*Table, error) {
	if cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("connections: MaxEntries %d is negative", cfg.MaxEntries)
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Table{cfg: cfg, seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = map[*tunnel.ConnInfo]entry{}
	}
	t.droppedC = prometheus.NewCounter(prometheus.CounterOpts{Name: "ambit_connections_table_dropped_total",
		Help: "Live connections not recorded in the admin connection table because it was full."})
	if cfg.Registerer != nil {
		entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ambit_connections_table_entries",
			Help: "Live connections recorded in the admin connection table."}, func() float64 { return float64(t.Len()) })
		for _, c := range []prometheus.Collector{t.droppedC, entries} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("connections: register metrics: %w", err)
			}
		}
	}
	return t, nil
}

// Hooks returns hooks that record each connection in the table and then
// call next (either of next's functions may be nil). OnStart records the
// connection before calling next.OnStart; OnEnd removes it before calling
// next.OnEnd, so a connection the metrics count as closed is already gone
// from the table.
func (t *Table) Hooks(next tunnel.Hooks) tunnel.Hooks {
	return tunnel.Hooks{
		OnStart: func(ci *tunnel.ConnInfo) {
			t.Start(ci)
			if next.OnStart != nil {
				next.OnStart(ci)
			}
		},
		OnEnd: func(ci *tunnel.ConnInfo) {
			t.End(ci)
			if next.OnEnd != nil {
				next.OnEnd(ci)
			}
		},
		OnRefuse: next.OnRefuse,
	}
}

// Start records ci (the tunnel's OnStart). It reports whether the
// connection was recorded: false when the table is full, or ci is nil or
// already recorded.
func (t *Table) Start(ci *tunnel.ConnInfo) bool {
	if ci == nil {
		return false
	}
	if t.count.Add(1) > int64(t.cfg.MaxEntries) {
		t.count.Add(-1)
		t.dropped.Add(1)
		t.droppedC.Inc()
		if t.warned.CompareAndSwap(false, true) {
			t.cfg.Logger.Warn("connections: table full, new connections are not listed at /connections (they are still proxied)",
				"capacity", t.cfg.MaxEntries)
		}
		return false
	}
	e := entry{
		id: t.nextID.Add(1), dir: ci.Direction,
		src: ci.SourceAddr, dst: ci.DestAddr, tun: ci.TunnelAddr,
		srcID: ci.Source, dstID: ci.Destination,
		policy: ci.Policy, start: ci.Start, live: ci.Live,
	}
	if e.start.IsZero() {
		e.start = t.cfg.Now()
	}
	if t.cfg.Workload != nil {
		e.workload = t.cfg.Workload(ci)
	}
	s := t.shard(ci)
	s.mu.Lock()
	_, dup := s.m[ci]
	if !dup {
		s.m[ci] = e
	}
	s.mu.Unlock()
	if dup {
		t.count.Add(-1)
		return false
	}
	return true
}

// End removes ci (the tunnel's OnEnd). It reports whether ci was recorded.
func (t *Table) End(ci *tunnel.ConnInfo) bool {
	if ci == nil {
		return false
	}
	s := t.shard(ci)
	s.mu.Lock()
	_, ok := s.m[ci]
	if ok {
		delete(s.m, ci)
	}
	s.mu.Unlock()
	if ok {
		t.count.Add(-1)
	}
	return ok
}

func (t *Table) shard(ci *tunnel.ConnInfo) *shard {
	return &t.shards[maphash.Comparable(t.seed, ci)%shards]
}

// Len is the number of connections recorded now.
func (t *Table) Len() int {
	t.lockAll()
	defer t.unlockAll()
	n := 0
	for i := range t.shards {
		n += len(t.shards[i].m)
	}
	return n
}

// lockAll locks every shard, always in index order (the only place more
// than one is held), so a snapshot is one moment of the whole table.
func (t *Table) lockAll() {
	for i := range t.shards {
		t.shards[i].mu.Lock()
	}
}

func (t *Table) unlockAll() {
	for i := range t.shards {
		t.shards[i].mu.Unlock()
	}
}

// Dropped counts connections not recorded because the table was full.
func (t *Table) Dropped() uint64 { return t.dropped.Load() }

// Capacity is the table's cap.
func (t *Table) Capacity() int { return t.cfg.MaxEntries }

// Snapshot copies the table, oldest connection first. It holds every
// shard while it copies (a copy, no formatting), so the snapshot is one
// moment of the table and never lists more than the cap; BenchmarkSnapshot
// measures that pause.
func (t *Table) Snapshot() Snapshot {
	now := t.cfg.Now()
	es := make([]entry, 0, max(t.count.Load(), 0))
	t.lockAll()
	for i := range t.shards {
		for _, e := range t.shards[i].m {
			es = append(es, e)
		}
	}
	dropped := t.dropped.Load()
	t.unlockAll()
	sort.Slice(es, func(i, j int) bool {
		if !es[i].start.Equal(es[j].start) {
			return es[i].start.Before(es[j].start)
		}
		return es[i].id < es[j].id
	})
	out := Snapshot{Active: len(es), Capacity: t.cfg.MaxEntries, Dropped: dropped, Connections: make([]Conn, len(es))}
	for i, e := range es {
		age := now.Sub(e.start)
		if age < 0 {
			age = 0
		}
		out.Connections[i] = Conn{
			ID: e.id, Direction: string(e.dir),
			SourceAddr: addrString(e.src), DestinationAddr: addrString(e.dst), TunnelAddr: addrString(e.tun),
			Workload:       e.workload,
			SourceIdentity: idString(e.srcID), DestinationIdentity: idString(e.dstID),
			Policy: e.policy, Start: e.start.UTC(), AgeSeconds: age.Seconds(),
		}
		if e.live != nil {
			out.Connections[i].BytesSent, out.Connections[i].BytesReceived = e.live()
		}
	}
	return out
}

// SnapshotAny is Snapshot typed for admin.Config.Connections.
func (t *Table) SnapshotAny() any { return t.Snapshot() }

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// LocalWorkload returns a Config.Workload that names the end of a
// connection on this node with lookup (e.g. the node's workload table
// returning "namespace/name"): the destination of an inbound connection,
// the source of an outbound one. Addresses are unmapped (::ffff:a.b.c.d
// becomes a.b.c.d) before the lookup.
func LocalWorkload(lookup func(netip.Addr) (string, bool)) func(*tunnel.ConnInfo) string {
	return func(ci *tunnel.ConnInfo) string {
		a := ci.SourceAddr
		if ci.Direction == tunnel.Inbound {
			a = ci.DestAddr
		}
		if !a.IsValid() {
			return ""
		}
		if name, ok := lookup(a.Addr().Unmap()); ok {
			return name
		}
		return ""
	}
}

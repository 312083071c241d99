package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/ambit-mesh/ambit/tunnel"
)

// DefaultMaxSeries is the default cap on distinct connection label sets.
const DefaultMaxSeries = 10000

// Config configures Metrics. Every field is optional.
type Config struct {
	// Version is reported in ambit_build_info. Optional, default "unknown".
	Version string
	// AccessLog receives one line per connection (use a JSON handler).
	// Optional: nil writes no access log.
	AccessLog *slog.Logger
	// AccessLogFormat names the fields: AccessLogFormatAmbit or
	// AccessLogFormatZtunnel. Optional, default ambit.
	AccessLogFormat string
	// AccessLogLevel is the initial level (AccessLogAll, AccessLogFailures,
	// AccessLogOff; SetAccessLogLevel changes it). Optional, default all.
	AccessLogLevel string
	// Logger receives this package's own warnings (the first label
	// overflow). Optional, default discard.
	Logger *slog.Logger
	// MaxSeries caps distinct connection label sets. Optional, default
	// DefaultMaxSeries.
	MaxSeries int
	// Workloads names the workloads, apps and destination Service of a
	// connection from the node's tables (bounded names such as
	// "frontend" or "backend.shop.svc.cluster.local", never addresses:
	// a value that parses as an IP address or address:port is reported
	// as "unknown"). Called on every hook: it must be fast and safe for
	// concurrent use. Optional: without it those labels are "unknown".
	Workloads func(*tunnel.ConnInfo) WorkloadLabels
	// Informers reports each informer's sync state at scrape time.
	// Optional.
	Informers func() map[string]bool
	// InformersStale reports, at scrape time, which informers' watches are
	// failing while the tables keep serving their last known state
	// (watch.InformerStatus.Stale). Optional.
	InformersStale func() map[string]bool
	// ClusterID is source_cluster/destination_cluster of the istio_
	// metrics for workloads the tables know. Optional, default
	// DefaultClusterID ("Kubernetes", Istio's default).
	ClusterID string
	// Now is the clock for certificate expiry. Optional, default time.Now.
	Now func() time.Time
}

// Metrics owns a Prometheus registry holding the node daemon's metrics.
type Metrics struct {
	cfg Config
	reg *prometheus.Registry
	log *slog.Logger

	opened, closed, failed, sent, recv      *prometheus.CounterVec
	iOpened, iClosed, iFailed, iSent, iRecv *prometheus.CounterVec
	live                                    *liveSet
	accessLevel                             atomic.Int32 // index in accessLevels
	overflow                                prometheus.Counter
	refused                                 *prometheus.CounterVec

	fetches       *prometheus.CounterVec
	fetchDuration prometheus.Histogram
	certChanges   prometheus.Counter

	ns *nsCache

	mu        sync.RWMutex
	series    map[labelKey]*series
	overflown bool
}

// New builds the metrics and registers them, with the Go runtime and process
// collectors, on a new Registry.
func New(cfg Config) (*Metrics, error) {
	if cfg.Version == "" {
		cfg.Version = "unknown"
	}
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = DefaultMaxSeries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = DefaultClusterID
	}
	switch cfg.AccessLogFormat {
	case "":
		cfg.AccessLogFormat = AccessLogFormatAmbit
	case AccessLogFormatAmbit, AccessLogFormatZtunnel:
	default:
		return nil, fmt.Errorf("metrics: access log format %q: want ambit or ztunnel", cfg.AccessLogFormat)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{cfg: cfg, reg: prometheus.NewRegistry(), log: cfg.Logger, series: map[labelKey]*series{}, ns: newNSCache(cfg.MaxSeries),
		live: newLiveSet()}
	if cfg.AccessLogLevel != "" {
		if err := m.SetAccessLogLevel(cfg.AccessLogLevel); err != nil {
			return nil, err
		}
	}
	conn := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, ambitLabels)
	}
	istio := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, istioLabels)
	}
	m.opened = conn("ambit_tcp_connections_opened_total", "Connections established through the tunnel.")
	m.closed = conn("ambit_tcp_connections_closed_total", "Established connections that ended.")
	m.failed = conn("ambit_tcp_connections_failed_total", "Connections that ended before being established (response_flags says why).")
	m.sent = conn("ambit_tcp_sent_bytes_total", "Payload bytes sent towards the destination, counted while the connection is open.")
	m.recv = conn("ambit_tcp_received_bytes_total", "Payload bytes received from the destination, counted while the connection is open.")
	// Istio's standard TCP metrics with ztunnel's names, help and labels.
	m.iOpened = istio("istio_tcp_connections_opened_total", "The total number of TCP connections opened")
	m.iClosed = istio("istio_tcp_connections_closed_total", "The total number of TCP connections closed")
	m.iFailed = istio("istio_tcp_connections_failed_total", "The total number of TCP connections that failed to establish (unstable)")
	m.iRecv = istio("istio_tcp_received_bytes_total", "The size of total bytes received during request in case of a TCP connection")
	m.iSent = istio("istio_tcp_sent_bytes_total", "The size of total bytes sent during response in case of a TCP connection")
	m.overflow = prometheus.NewCounter(prometheus.CounterOpts{Name: "ambit_metrics_label_overflow_total",
		Help: "Connections whose labels were collapsed to \"other\" because the label set cap was reached."})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambit_hbone_refused_total",
		Help: "Refusals by the HBONE server's hostile-peer defences, by reason (flood closes, handshake and identity caps, loops, malformed requests)."},
		[]string{"reason"})
	m.fetches = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambit_identity_fetches_total",
		Help: "Attempts to obtain a workload certificate from the CA, by result."}, []string{"result"})
	m.fetchDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ambit_identity_fetch_duration_seconds",
		Help: "Duration of one attempt to obtain a workload certificate.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)})
	m.certChanges = prometheus.NewCounter(prometheus.CounterOpts{Name: "ambit_identity_certificate_changes_total",
		Help: "Certificates installed or removed for workload identities."})
	for _, r := range []string{resultSuccess, resultFailure} {
		m.fetches.WithLabelValues(r)
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ambit_build_info",
		Help: "Build of the running daemon (always 1)."}, []string{"version", "go_version"})
	build.WithLabelValues(cfg.Version, runtime.Version()).Set(1)

	cs := []prometheus.Collector{m.opened, m.closed, m.failed, m.sent, m.recv, m.overflow, m.refused,
		m.iOpened, m.iClosed, m.iFailed, m.iSent, m.iRecv,
		m.fetches, m.fetchDuration, m.certChanges, build, &stateCollector{m: m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return m, nil
}

// Registry returns the registry, to add other collectors (the tunnel's,
// the capture's) or to gather in tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats,
// flushing the bytes of open connections first (see Gather).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m, promhttp.HandlerOpts{ErrorLog: slogErrorLog{m.log}, Registry: m.reg})
}

// Gather implements prometheus.Gatherer: it adds the bytes open
// connections carried since the last flush to the byte counters, then
// gathers the registry, so every scrape sees the bytes up to that moment
// and rate() is right while connections last for hours.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) {
	m.Flush()
	return m.reg.Gather()
}

// Flush adds the bytes open connections carried since the last flush to
// the byte counters (Gather calls it; the daemon may call it periodically
// too). It reads counters the data path keeps (tunnel.ConnInfo.Live).
func (m *Metrics) Flush() { m.live.flush() }

// OpenConnections reports how many open connections have their bytes
// counted as they flow.
func (m *Metrics) OpenConnections() int { return m.live.size() }

type slogErrorLog struct{ l *slog.Logger }

func (s slogErrorLog) Println(v ...any) { s.l.Warn("metrics: scrape", "error", fmt.Sprint(v...)) }

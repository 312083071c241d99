package admin

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNotLoopback is returned by New for an address that is not loopback
// when Config.AllowNonLoopback is false.
var ErrNotLoopback = errors.New("admin: address is not loopback")

// DefaultAddr is the admin server's default address.
const DefaultAddr = "localhost:15000"

// Config configures the admin server.
type Config struct {
	// Addr is the listen address. Optional, default DefaultAddr. It must
	// be loopback ("localhost", 127.0.0.0/8, ::1) unless AllowNonLoopback.
	Addr string
	// AllowNonLoopback permits any address (the admin port then exposes
	// internal state and pprof to the network). Optional.
	AllowNonLoopback bool
	// Level is the level /logging reads and changes. Required.
	Level *slog.LevelVar
	// AccessLog lets /logging read and change the access log level
	// (?access_log=all|failures|off). Optional.
	AccessLog AccessLogControl
	// ConfigDump provides /config_dump. Optional: default empty.
	ConfigDump *ConfigDump
	// Connections provides GET /connections: a JSON-encodable snapshot of
	// the live connections (connections.Table.SnapshotAny), called on every
	// request; it must never return key material. Optional: without it
	// /connections answers 404 saying the table is not enabled.
	Connections func() any
	// Logger receives a line per refused request and level change.
	// Optional, default discard.
	Logger *slog.Logger
	// Registerer receives ambit_admin_bad_requests_total{handler}.
	// Optional.
	Registerer prometheus.Registerer
}

// Server is the admin endpoint: its Handler serves /config_dump,
// /connections, /logging and /debug/pprof/.
type Server struct {
	addr    string
	handler http.Handler
}

// New validates cfg and builds the admin mux.
func New(cfg Config) (*Server, error) {
	if cfg.Level == nil {
		return nil, errors.New("admin: Config.Level is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if !cfg.AllowNonLoopback {
		if err := checkLoopback(cfg.Addr); err != nil {
			return nil, err
		}
	}
	if cfg.ConfigDump == nil {
		cfg.ConfigDump = NewConfigDump()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	badReqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambit_admin_bad_requests_total",
		Help: "Admin requests refused as bad input, by handler."}, []string{"handler"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(badReqs); err != nil {
			return nil, fmt.Errorf("admin: register metrics: %w", err)
		}
	}
	bad := func(h string) { badReqs.WithLabelValues(h).Inc() }

	mux := http.NewServeMux()
	mux.Handle("GET /config_dump", configDumpHandler(cfg.ConfigDump, cfg.Logger, bad))
	mux.Handle("GET /connections", connectionsHandler(cfg.Connections, cfg.Logger))
	mux.Handle("/logging", loggingHandler(cfg.Level, cfg.AccessLog, cfg.Logger, bad))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &Server{addr: cfg.Addr, handler: mux}, nil
}

// Addr is the address the server is meant to listen on.
func (s *Server) Addr() string { return s.addr }

// Handler is the admin mux.
func (s *Server) Handler() http.Handler { return s.handler }

// checkLoopback accepts "localhost" and loopback IPs; an empty host means
// every interface and is refused.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin: address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %q (set AllowNonLoopback to expose it)", ErrNotLoopback, addr)
	}
	return nil
}

// MetricsHandler returns the mux for the metrics port: h (the Prometheus
// handler) at /metrics and at /stats/prometheus, the path Istio's
// scrape configuration uses.
func MetricsHandler(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.Handle("GET /stats/prometheus", h)
	return mux
}

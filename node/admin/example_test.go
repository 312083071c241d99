package admin_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/ambit-mesh/ambit/node/admin"
	"github.com/ambit-mesh/ambit/node/connections"
	"github.com/ambit-mesh/ambit/node/metrics"
)

// Example wires the daemon's three HTTP surfaces. The functions given to
// Register stand for the tables, watches, capture and identity manager.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // an example: stop at once

	var level slog.LevelVar
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: &level}))
	informers := func() map[string]bool { return map[string]bool{"pods": true} }

	m, err := metrics.New(metrics.Config{Version: "v0.1.0", AccessLog: log, Logger: log, Informers: informers})
	if err != nil {
		panic(err)
	}
	// The live-connection table wraps the metrics hooks: one tunnel.Hooks
	// feeds both, and the table is served at /connections.
	conns, err := connections.New(connections.Config{Logger: log, Registerer: m.Registry()})
	if err != nil {
		panic(err)
	}
	_ = conns.Hooks(m.NodeHooks())
	// dataplane.NodeConfig{Hooks: conns.Hooks(m.NodeHooks())},
	// tunnel.ServerConfig{Hooks: conns.Hooks(m.TunnelHooks(metrics.ReporterDestination))},
	// tunnel.ClientConfig{Hooks: conns.Hooks(m.TunnelHooks(metrics.ReporterSource))},
	// identity.ManagerConfig{Observer: m}.

	ready := admin.NewReadiness()
	ready.Register("informers", admin.InformersSynced(informers))
	ready.Register("listeners", func() error { return nil })

	dump := admin.NewConfigDump()
	dump.Register("workloads", func() any { return []string{} })
	// dump.Register("certificates", admin.CertificatesSection(manager))

	adm, err := admin.New(admin.Config{Level: &level, ConfigDump: dump, Connections: conns.SnapshotAny,
		Logger: log, Registerer: m.Registry()})
	if err != nil {
		panic(err)
	}
	errc := make(chan error, 3)
	go func() { errc <- admin.Serve(ctx, adm.Addr(), adm.Handler(), log) }()
	go func() { errc <- admin.Serve(ctx, ":15020", admin.MetricsHandler(m.Handler()), log) }()
	go func() { errc <- admin.Serve(ctx, ":15021", ready.Handler(), log) }()
	for range 3 {
		<-errc
	}
}

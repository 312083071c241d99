package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ambit-mesh/ambit/node/agent"
	"github.com/ambit-mesh/ambit/node/config"
)

// The node daemon is ambit's default command: `ambit [flags]` (what the
// chart's DaemonSet runs).
func init() { defaultCommand = runNode }

// runNode parses the configuration (exit 2 with one line when it is bad),
// builds the API client and runs the daemon until ctx ends.
func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := config.Parse(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		config.PrintUsage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "ambit:", err)
		return 2
	}
	level := new(slog.LevelVar)
	level.Set(cfg.Level())
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	access := slog.New(slog.NewJSONHandler(stdout, nil)).With("log", "access")
	rc, err := restConfig()
	if err != nil {
		log.Error("kubernetes client", "err", err)
		return 1
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		log.Error("kubernetes client", "err", err)
		return 1
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		log.Error("kubernetes client", "err", err)
		return 1
	}
	disc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		log.Error("kubernetes client", "err", err)
		return 1
	}
	err = agent.Run(ctx, agent.Options{Config: cfg, Kube: kube, Dynamic: dyn, Discovery: disc,
		Version: version(), Level: level, Logger: log, AccessLog: access})
	if errors.Is(err, agent.ErrFIPS) || errors.Is(err, config.ErrUsage) {
		fmt.Fprintln(stderr, "ambit:", err)
		return 2
	}
	if err != nil {
		log.Error("node daemon failed", "err", err)
		return 1
	}
	return 0
}

// restConfig uses $KUBECONFIG when set (a daemon run by hand), else the
// pod's in-cluster configuration.
func restConfig() (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if p := os.Getenv("KUBECONFIG"); p != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", p)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "ambit/" + version()
	return rc, nil
}

// version is the module version the binary was built from ("(devel)" for a
// local build), with the VCS revision when known.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}

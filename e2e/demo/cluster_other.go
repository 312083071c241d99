//go:build !linux

package demo

import (
	"context"
	"errors"
	"io"
	"log/slog"
)

// ClusterOptions configure Cluster (see cluster.go).
type ClusterOptions struct {
	Keep   bool
	Logger *slog.Logger
}

// Cluster needs Linux (the e2e cluster harness).
func Cluster(context.Context, io.Writer, ClusterOptions) error {
	return errors.New("demo: the cluster demo needs Linux (run it with -local elsewhere)")
}

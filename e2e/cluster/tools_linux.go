//go:build linux

package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Helm runs bin/helm against the cluster (admin kubeconfig; helm's cache,
// config and data directories in the run directory) and returns its
// combined output.
func (c *Cluster) Helm(ctx context.Context, args ...string) (string, error) {
	return c.tool(ctx, "helm", args...)
}

// Kubectl runs bin/kubectl against the cluster and returns its combined
// output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.tool(ctx, "kubectl", args...)
}

// ToolEnv is the environment for running kubectl or helm against the
// cluster by hand: KUBECONFIG and helm's directories.
func (c *Cluster) ToolEnv() []string {
	h := filepath.Join(c.WorkDir, "helm")
	return []string{
		"KUBECONFIG=" + c.Kubeconfig,
		"HELM_CACHE_HOME=" + filepath.Join(h, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(h, "config"),
		"HELM_DATA_HOME=" + filepath.Join(h, "data"),
	}
}

func (c *Cluster) tool(ctx context.Context, name string, args ...string) (string, error) {
	path := c.bin(name)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%w: %s not built (run e2e/hack/build-bins.sh)", ErrUnavailable, path)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), c.ToolEnv()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

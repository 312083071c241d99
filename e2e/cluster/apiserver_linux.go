//go:build linux

package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"
)

// KillAPIServer kills kube-apiserver with SIGKILL (a crash: no graceful
// shutdown) and waits until it has exited. Everything else keeps running;
// StartAPIServer brings it back.
func (c *Cluster) KillAPIServer(ctx context.Context) error {
	c.mu.Lock()
	p := c.apiserver
	c.mu.Unlock()
	if p == nil {
		return errors.New("cluster: no kube-apiserver to kill")
	}
	if done, _ := p.exited(); done {
		return errors.New("cluster: kube-apiserver already exited")
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("cluster: kill kube-apiserver: %w", err)
	}
	select {
	case <-p.done:
		// Not a crash of the cluster's: waits on components must not fail
		// on it (StartAPIServer adds the new process).
		c.mu.Lock()
		c.procs = slices.DeleteFunc(c.procs, func(q *proc) bool { return q == p })
		c.mu.Unlock()
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: kube-apiserver did not exit: %w", ctx.Err())
	case <-time.After(30 * time.Second):
		return errors.New("cluster: kube-apiserver did not exit 30 s after SIGKILL")
	}
}

// StartAPIServer starts kube-apiserver again after KillAPIServer, with the
// same flags and store, and waits until it answers /readyz.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	p := c.apiserver
	c.mu.Unlock()
	if p != nil {
		if done, _ := p.exited(); !done {
			return errors.New("cluster: kube-apiserver is still running")
		}
	}
	return c.startAPIServer(ctx)
}

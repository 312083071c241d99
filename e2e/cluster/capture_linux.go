//go:build linux

package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Capture is a tcpdump recording packets on an interface of a node's
// network namespace: eth0 carries traffic between nodes, cni0 between the
// node's pods.
type Capture struct {
	node *Node
	file string
	cmd  *exec.Cmd
	done chan error
	once sync.Once
}

// StartCapture starts tcpdump on iface in the node's network namespace with
// a pcap filter (e.g. "tcp"), returning once it is capturing.
func (n *Node) StartCapture(ctx context.Context, iface, filter string) (*Capture, error) {
	dir := filepath.Join(n.Dir, "captures")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, iface+"-*.pcap")
	if err != nil {
		return nil, err
	}
	f.Close()
	args := []string{"-i", iface, "-n", "-U", "-s", "0", "-w", f.Name()}
	if filter != "" {
		args = append(args, filter)
	}
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.NetNS, "--", "tcpdump"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("capture on %s %s: %w", n.Name, iface, err)
	}
	c := &Capture{node: n, file: f.Name(), cmd: cmd, done: make(chan error, 1)}
	listening := make(chan struct{})
	var lines []string
	go func() {
		s := bufio.NewScanner(stderr)
		signalled := false
		for s.Scan() {
			lines = append(lines, s.Text())
			if !signalled && strings.Contains(s.Text(), "listening on") {
				signalled = true
				close(listening)
			}
		}
		if !signalled {
			close(listening)
		}
		c.done <- cmd.Wait()
	}()
	select {
	case <-listening:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return nil, fmt.Errorf("capture on %s %s: %w", n.Name, iface, ctx.Err())
	}
	select {
	case err := <-c.done: // exited right away
		return nil, fmt.Errorf("capture on %s %s: tcpdump exited (%v): %s", n.Name, iface, err, strings.Join(lines, "; "))
	case <-time.After(100 * time.Millisecond):
	}
	return c, nil
}

// Stop ends the capture and returns the packets as tcpdump's text with
// payloads in ASCII (-A), so a test can search it for a marker string.
func (c *Capture) Stop(ctx context.Context) (string, error) {
	c.once.Do(func() {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
	})
	out, err := exec.CommandContext(ctx, "tcpdump", "-r", c.file, "-n", "-A").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("reading capture %s: %w: %s", c.file, err, ee.Stderr)
		}
		return "", fmt.Errorf("reading capture %s: %w", c.file, err)
	}
	return string(out), nil
}

// File is the pcap file (kept until the cluster stops).
func (c *Capture) File() string { return c.file }

package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/node/admin"
	"github.com/ambit-mesh/ambit/node/connections"
)

// TestBinary builds ambitctl and runs it as a process: a table from a real
// admin server (exit 0), bad usage (exit 2, one line), a daemon that is
// not there (exit 1, one line).
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ambitctl")
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build ambitctl: %v", err)
	}
	build := exec.Command(gobin, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	tbl, err := connections.New(connections.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dump := admin.NewConfigDump()
	dump.Register("workloads", func() any {
		return []map[string]any{{"namespace": "pay", "name": "backend-0", "ips": []string{"10.2.0.9"}, "enrolled": true}}
	})
	srv, err := admin.New(admin.Config{Level: new(slog.LevelVar), ConfigDump: dump, Connections: tbl.SnapshotAny})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- admin.ServeListener(ctx, ln, srv.Handler(), nil) }()
	defer func() { cancel(); <-done }()
	url := "http://" + ln.Addr().String()

	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string
		stderrPart string
	}{
		{[]string{"workloads", "--admin", url}, 0, "NAMESPACE  NAME       IPS       ENROLLED\npay        backend-0  10.2.0.9  yes\n", ""},
		{[]string{"connections", "--admin", url}, 0, "", "ambitctl: no live connections"},
		{[]string{"workloads", "--admin", url, "-o", "xml"}, 2, "", `ambitctl: -o "xml": want table or json (ambitctl -h for usage)`},
		{[]string{"workloads", "--admin", "127.0.0.1:1"}, 1, "", "connection refused"},
	} {
		cmd := exec.Command(bin, tc.args...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || out.String() != tc.stdout || !strings.Contains(errb.String(), tc.stderrPart) ||
			(tc.stderrPart != "" && strings.Count(errb.String(), "\n") != 1) {
			t.Errorf("ambitctl %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q",
				tc.args, code, out.String(), errb.String(), tc.code, tc.stdout, tc.stderrPart)
		}
	}
}

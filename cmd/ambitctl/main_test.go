package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/node/admin"
	"github.com/ambit-mesh/ambit/node/connections"
	"github.com/ambit-mesh/ambit/node/metrics"
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
	met, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	srv, err := admin.New(admin.Config{Level: level, AccessLog: met, ConfigDump: dump, Connections: tbl.SnapshotAny})
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
	saved := filepath.Join(t.TempDir(), "workloads.json")
	fullDump := filepath.Join(t.TempDir(), "dump.json")
	if err := os.WriteFile(fullDump, []byte(`{"workloads":[{"namespace":"shop","name":"web-0","enrolled":false}],"config":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string
		stderrPart string
	}{
		{[]string{"workloads", "--admin", url}, 0, "NAMESPACE  NAME       IPS       ENROLLED\npay        backend-0  10.2.0.9  yes\n", ""},
		{[]string{"connections", "--admin", url}, 0, "", "ambitctl: no live connections"},
		{[]string{"workloads", "--admin", url, "-o", "xml"}, 2, "", `ambitctl: -o "xml": want table, json or yaml (ambitctl -h for usage)`},
		{[]string{"workloads", "--admin", url, "-o", "yaml"}, 0, "- enrolled: true\n  ips:\n  - 10.2.0.9\n  name: backend-0\n  namespace: pay\n", ""},
		{[]string{"log", "--admin", url}, 0, "level: info\naccess_log: all\n", ""},
		{[]string{"log", "--admin", url, "--level", "debug", "--access-log", "failures"}, 0, "level: debug\naccess_log: failures\n", ""},
		{[]string{"log", "--admin", url, "--access-log", "some"}, 1, "", `400 Bad Request: bad access_log "some"`},
		{[]string{"workloads", "--file", fullDump}, 0, "NAMESPACE  NAME   ENROLLED\nshop       web-0  no\n", ""},
		{[]string{"workloads", "--file", filepath.Join(t.TempDir(), "none.json")}, 1, "", "no such file"},
		{[]string{"workloads", "--admin", "127.0.0.1:1"}, 1, "", "connection refused"},
	} {
		if tc.args[0] == "save" {
			continue
		}
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
	// The log command changed the daemon's levels.
	if level.Level() != slog.LevelDebug || met.AccessLogLevel() != "failures" {
		t.Errorf("after ambitctl log: level %v, access log %s", level.Level(), met.AccessLogLevel())
	}
	// A saved -o json is read back with --file.
	out, err := exec.Command(bin, "workloads", "--admin", url, "-o", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(saved, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := exec.Command(bin, "workloads", "--file", saved).Output(); err != nil ||
		string(got) != "NAMESPACE  NAME       IPS       ENROLLED\npay        backend-0  10.2.0.9  yes\n" {
		t.Errorf("--file of a saved -o json: %q, %v", got, err)
	}
	if got, err := exec.Command(bin, "version").Output(); err != nil || !strings.HasPrefix(string(got), "ambitctl ") {
		t.Errorf("version: %q, %v", got, err)
	}
}

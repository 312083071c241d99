package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServerAnswersWithPeerAndMarker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuf
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, "srv-1", &log) }()

	answer, err := probe(context.Background(), ln.Addr().String(), "MARKER-42", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(answer, "srv-1 peer=127.0.0.1:") {
		t.Errorf("answer %q: want name and the client's address", answer)
	}
	if !strings.Contains(answer, "local="+ln.Addr().String()) || !strings.HasSuffix(answer, " got=MARKER-42") {
		t.Errorf("answer %q: want local=%s and got=MARKER-42", answer, ln.Addr())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if l := log.String(); !strings.Contains(l, "conn peer=127.0.0.1:") || !strings.Contains(l, "got=MARKER-42") {
		t.Errorf("server log %q: want the connection logged", l)
	}
}

func TestProbeFailsWithoutServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := probe(context.Background(), addr, "x", time.Second); err == nil {
		t.Fatal("probe of a closed port succeeded")
	}
}

func TestConnectOnly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got, err := connect(context.Background(), ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "connected 127.0.0.1:") {
		t.Errorf("connect = %q", got)
	}
	ln.Close()
	if _, err := connect(context.Background(), ln.Addr().String(), time.Second); err == nil {
		t.Error("connect to a closed port succeeded")
	}
}

func TestPrintFiles(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/a.conf"
	if err := os.WriteFile(p, []byte("subnet 10.0.0.0/24"), 0o644); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := printFiles(&b, []string{p}); err != nil {
		t.Fatal(err)
	}
	if want := "file " + p + "\nsubnet 10.0.0.0/24\n"; b.String() != want {
		t.Errorf("printFiles = %q, want %q", b.String(), want)
	}
	if err := printFiles(&b, []string{dir + "/missing"}); err == nil {
		t.Error("a missing file was not an error")
	}
}

// TestHold: one connection carries every exchange; when the server goes
// away the client reports the failure and stops.
func TestHold(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuf
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, "srv-1", &log) }()
	var out syncBuf
	if err := holdMain(context.Background(), &out, ln.Addr().String(), "HOLD-1", 3, 10*time.Millisecond, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ok ") || !strings.HasSuffix(lines[2], "got=HOLD-1") || lines[3] != "done ok=3" {
		t.Fatalf("output %q", out.String())
	}
	if n := strings.Count(log.String(), "got=HOLD-1"); n != 3 {
		t.Errorf("server saw %d exchanges, want 3", n)
	}
	// One connection: every answer names the same client address.
	peer := func(l string) string { return strings.Fields(l)[3] }
	if peer(lines[0]) != peer(lines[2]) {
		t.Errorf("exchanges on different connections: %q vs %q", lines[0], lines[2])
	}

	// Server gone mid-hold: a fail line and an error.
	out = syncBuf{}
	errc := make(chan error, 1)
	go func() {
		errc <- holdMain(context.Background(), &out, ln.Addr().String(), "HOLD-2", 0, 20*time.Millisecond, time.Second)
	}()
	for !strings.Contains(out.String(), "got=HOLD-2") {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if err := <-errc; err == nil || !strings.Contains(out.String(), "\nfail ") {
		t.Errorf("hold after the server went away: %v, output %q", err, out.String())
	}
}

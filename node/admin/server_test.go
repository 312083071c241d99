package admin

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestNewRefusesNonLoopback(t *testing.T) {
	lv := new(slog.LevelVar)
	for addr, wantErr := range map[string]bool{
		"localhost:15000": false, "127.0.0.1:15000": false, "127.0.0.2:15000": false, "[::1]:15000": false,
		":15000": true, "0.0.0.0:15000": true, "[::]:15000": true, "10.0.0.5:15000": true, "example.com:15000": true,
	} {
		_, err := New(Config{Addr: addr, Level: lv})
		if wantErr != errors.Is(err, ErrNotLoopback) {
			t.Errorf("New(%q) = %v, want ErrNotLoopback %v", addr, err, wantErr)
		}
		if _, err := New(Config{Addr: addr, Level: lv, AllowNonLoopback: true}); err != nil {
			t.Errorf("New(%q, AllowNonLoopback) = %v", addr, err)
		}
	}
	if _, err := New(Config{Addr: "nonsense", Level: lv}); err == nil || errors.Is(err, ErrNotLoopback) {
		t.Errorf("New(nonsense) = %v, want an address error", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without Level succeeded")
	}
	s, err := New(Config{Level: lv})
	if err != nil || s.Addr() != DefaultAddr {
		t.Errorf("default: %v %q", err, s.Addr())
	}
}

func TestPprofOnAdminMuxOnly(t *testing.T) {
	s, err := New(Config{Level: new(slog.LevelVar)})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s.Handler())
	code, body := do(t, "GET", base+"/debug/pprof/")
	if code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof index: %d", code)
	}
	if code, body := do(t, "GET", base+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Fatalf("goroutine profile: %d", code)
	}
	if code, _ := do(t, "GET", base+"/debug/pprof/cmdline"); code != 200 {
		t.Fatalf("cmdline: %d", code)
	}
	// Importing net/http/pprof registers on DefaultServeMux too: that mux
	// must not be what serves anything here, and we never serve it.
	if s.Handler() == http.DefaultServeMux {
		t.Fatal("admin handler is DefaultServeMux")
	}
	if code, _ := do(t, "GET", base+"/nope"); code != 404 {
		t.Fatalf("unknown path: %d, want 404", code)
	}
}

func TestMetricsHandler(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ambit_up 1\n")) })
	base := serve(t, MetricsHandler(h))
	for _, p := range []string{"/metrics", "/stats/prometheus"} {
		if code, body := do(t, "GET", base+p); code != 200 || body != "ambit_up 1\n" {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	if code, _ := do(t, "GET", base+"/config_dump"); code != 404 {
		t.Errorf("metrics port serves /config_dump: %d", code)
	}
}

// TestServeGracefulShutdown: a request in flight when ctx ends completes;
// Serve then returns nil and the port is closed.
func TestServeGracefulShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	entered, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = w.Write([]byte("done"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeListener(ctx, ln, h, nil) }()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b := make([]byte, 16)
		n, _ := resp.Body.Read(b)
		got <- string(b[:n])
	}()
	<-entered
	cancel()
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v before the in-flight request finished", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if b := <-got; b != "done" {
		t.Fatalf("in-flight request got %q, want done", b)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		_ = c.Close()
		t.Fatal("port still open after Serve returned")
	}
}

func TestServeListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Serve(context.Background(), ln.Addr().String(), http.NotFoundHandler(), nil)
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Serve on a taken port = %v, want a listen error", err)
	}
}

func TestServeByAddr(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Find a free port, release it, serve on it by address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	r := NewReadiness()
	r.Register("ok", func() error { return nil })
	go func() { done <- Serve(ctx, addr, r.Handler(), slog.New(slog.DiscardHandler)) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + ReadyPath)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("ready: %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
}

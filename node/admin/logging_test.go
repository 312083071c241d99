package admin

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestLogging(t *testing.T) {
	var lv slog.LevelVar
	var logs lockedBuffer
	reg := prometheus.NewRegistry()
	srv, err := New(Config{Level: &lv, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, srv.Handler()) + "/logging"

	if code, body := do(t, "GET", url); code != 200 || body != "level: info\n" {
		t.Fatalf("GET: %d %q", code, body)
	}
	if code, body := do(t, "POST", url+"?level=debug"); code != 200 || body != "level: debug\n" {
		t.Fatalf("POST debug: %d %q", code, body)
	}
	if lv.Level() != slog.LevelDebug {
		t.Fatalf("level = %v, want debug", lv.Level())
	}
	if code, body := do(t, "GET", url); code != 200 || body != "level: debug\n" {
		t.Fatalf("GET after POST: %d %q", code, body)
	}
	for _, bad := range []string{"?level=verbose", "?level=", ""} {
		code, body := do(t, "POST", url+bad)
		if code != 400 || !strings.Contains(body, "bad level") {
			t.Errorf("POST %q: %d %q, want 400", bad, code, body)
		}
	}
	if lv.Level() != slog.LevelDebug {
		t.Fatalf("a bad level changed the level to %v", lv.Level())
	}
	if !strings.Contains(logs.String(), `msg="admin: logging: bad level refused" level=verbose`) {
		t.Errorf("no log line for the bad level:\n%s", logs.String())
	}
	if code, _ := do(t, "PUT", url+"?level=warn"); code != 405 {
		t.Errorf("PUT: %d, want 405", code)
	}
	if got := badRequests(t, reg); got != 4 {
		t.Errorf("bad requests counted %v, want 4", got)
	}
	if code, _ := do(t, "POST", url+"?level=ERROR"); code != 200 || lv.Level() != slog.LevelError {
		t.Errorf("POST ERROR: %d level %v", code, lv.Level())
	}
}

// badRequests sums ambit_admin_bad_requests_total.
func badRequests(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "ambit_admin_bad_requests_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// accessCtl is a hand-written AccessLogControl.
type accessCtl struct {
	mu    sync.Mutex
	level string
}

func (a *accessCtl) AccessLogLevel() string { a.mu.Lock(); defer a.mu.Unlock(); return a.level }
func (a *accessCtl) SetAccessLogLevel(l string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.level = l
	return nil
}

func TestLoggingAccessLog(t *testing.T) {
	var lv slog.LevelVar
	ctl := &accessCtl{level: "all"}
	srv, err := New(Config{Level: &lv, AccessLog: ctl})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, srv.Handler()) + "/logging"
	if code, body := do(t, "GET", url); code != 200 || body != "level: info\naccess_log: all\n" {
		t.Fatalf("GET: %d %q", code, body)
	}
	if code, body := do(t, "POST", url+"?access_log=failures"); code != 200 || body != "level: info\naccess_log: failures\n" {
		t.Fatalf("POST access_log: %d %q", code, body)
	}
	if code, body := do(t, "POST", url+"?access_log=off&level=warn"); code != 200 || body != "level: warn\naccess_log: off\n" {
		t.Fatalf("POST both: %d %q", code, body)
	}
	for _, bad := range []string{"?access_log=some", "?access_log=all&level=verbose", "?access_log="} {
		if code, _ := do(t, "POST", url+bad); code != 400 {
			t.Errorf("POST %s: %d, want 400", bad, code)
		}
	}
	if ctl.AccessLogLevel() != "off" || lv.Level() != slog.LevelWarn {
		t.Errorf("a refused request changed something: access %s level %v", ctl.AccessLogLevel(), lv.Level())
	}
	// Without a control, access_log is refused and nothing changes.
	srv2, _ := New(Config{Level: &lv})
	if code, _ := do(t, "POST", serve(t, srv2.Handler())+"/logging?access_log=all"); code != 400 {
		t.Errorf("access_log without a control: %d, want 400", code)
	}
}

package admin

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzLogging: any level value is either one of the four names (200, level
// set) or refused with 400 and the level unchanged.
func FuzzLogging(f *testing.F) {
	for _, s := range []string{"debug", "INFO", "warn", "error", "", "verbose", "debug ", "-4", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, level string) {
		var lv slog.LevelVar
		lv.Set(slog.LevelWarn)
		h := loggingHandler(&lv, nil, slog.New(slog.DiscardHandler), func(string) {})
		rec := httptest.NewRecorder()
		h(rec, httptest.NewRequest(http.MethodPost, "/logging?level="+url.QueryEscape(level), nil))
		want, valid := levelNames[strings.ToLower(level)]
		switch {
		case valid && (rec.Code != 200 || lv.Level() != want):
			t.Fatalf("level %q: %d, level %v", level, rec.Code, lv.Level())
		case !valid && (rec.Code != 400 || lv.Level() != slog.LevelWarn):
			t.Fatalf("bad level %q: %d, level %v", level, rec.Code, lv.Level())
		}
	})
}

// FuzzConfigDumpInclude: any include list gives 200 with only known
// sections, or 400; never a 500.
func FuzzConfigDumpInclude(f *testing.F) {
	for _, s := range []string{"pools", "pools,policies", "", ",", "nope", "pools,,pools"} {
		f.Add(s)
	}
	d := NewConfigDump()
	d.Register("pools", func() any { return 1 })
	d.Register("policies", func() any { return []string{"a"} })
	f.Fuzz(func(t *testing.T, include string) {
		rec := httptest.NewRecorder()
		configDumpHandler(d, slog.New(slog.DiscardHandler), func(string) {})(rec,
			httptest.NewRequest(http.MethodGet, "/config_dump?include="+url.QueryEscape(include), nil))
		known := true
		if include != "" {
			for _, n := range strings.Split(include, ",") {
				known = known && (n == "pools" || n == "policies")
			}
		}
		if (known && rec.Code != 200) || (!known && rec.Code != 400) {
			t.Fatalf("include %q: %d %s", include, rec.Code, rec.Body)
		}
	})
}

package admin

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/ambit-mesh/ambit/identity"
)

// ConfigDump assembles /config_dump from named sections. Safe for
// concurrent use.
type ConfigDump struct {
	mu       sync.RWMutex
	sections map[string]func() any
}

// NewConfigDump returns an empty ConfigDump.
func NewConfigDump() *ConfigDump { return &ConfigDump{sections: map[string]func() any{}} }

// Register adds or replaces a section. f is called on every request and
// its result encoded as JSON: it must return a snapshot (no live maps
// shared with writers) and never key material.
func (d *ConfigDump) Register(name string, f func() any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sections[name] = f
}

// Names lists the registered sections, sorted.
func (d *ConfigDump) Names() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]string, 0, len(d.sections))
	for n := range d.sections {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Dump returns the sections named in include (all when include is empty)
// as a map ready for JSON encoding; unknown names are returned in the
// second result.
func (d *ConfigDump) Dump(include []string) (map[string]any, []string) {
	d.mu.RLock()
	fs := make(map[string]func() any, len(d.sections))
	var unknown []string
	if len(include) == 0 {
		for n, f := range d.sections {
			fs[n] = f
		}
	}
	for _, n := range include {
		if f, ok := d.sections[n]; ok {
			fs[n] = f
		} else {
			unknown = append(unknown, n)
		}
	}
	d.mu.RUnlock()
	out := make(map[string]any, len(fs))
	for n, f := range fs {
		out[n] = f()
	}
	return out, unknown
}

// configDumpHandler serves GET /config_dump[?include=a,b].
func configDumpHandler(d *ConfigDump, log *slog.Logger, bad func(string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var include []string
		if v := r.URL.Query().Get("include"); v != "" {
			include = strings.Split(v, ",")
		}
		dump, unknown := d.Dump(include)
		if len(unknown) > 0 {
			bad("config_dump")
			log.Warn("admin: config_dump: unknown section", "sections", unknown, "known", d.Names())
			http.Error(w, "unknown section(s): "+strings.Join(unknown, ", ")+"; known: "+strings.Join(d.Names(), ", "), http.StatusBadRequest)
			return
		}
		b, err := json.MarshalIndent(dump, "", "  ")
		if err != nil {
			log.Error("admin: config_dump: encode", "error", err)
			http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(b, '\n'))
	}
}

// CertificatesSection is the "certificates" section: the Manager's
// snapshot, which by construction holds no key material.
func CertificatesSection(m interface{ Snapshot() []identity.CertInfo }) func() any {
	return func() any { return m.Snapshot() }
}

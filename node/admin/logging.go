package admin

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
)

// levelNames are the levels /logging accepts.
var levelNames = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

func levelName(l slog.Level) string {
	for n, v := range levelNames {
		if v == l {
			return n
		}
	}
	return strings.ToLower(l.String())
}

// AccessLogControl reads and changes which connections the access log
// writes (*metrics.Metrics satisfies it).
type AccessLogControl interface {
	AccessLogLevel() string
	SetAccessLogLevel(string) error
}

// loggingHandler serves /logging: GET prints the log level (and the access
// log's, with access), POST ?level= and/or ?access_log= change them. A bad
// value or method is refused with 400/405, logged and counted, and changes
// nothing.
func loggingHandler(lv *slog.LevelVar, access AccessLogControl, log *slog.Logger, bad func(string)) http.HandlerFunc {
	show := func(w http.ResponseWriter) {
		_, _ = fmt.Fprintf(w, "level: %s\n", levelName(lv.Level()))
		if access != nil {
			_, _ = fmt.Fprintf(w, "access_log: %s\n", access.AccessLogLevel())
		}
	}
	refuse := func(w http.ResponseWriter, what, msg string, args ...any) {
		bad("logging")
		log.Warn("admin: logging: bad "+what+" refused", args...)
		http.Error(w, msg, http.StatusBadRequest)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			show(w)
		case http.MethodPost:
			q := r.URL.Query()
			v, setLevel := q.Get("level"), q.Has("level")
			al, setAccess := q.Get("access_log"), q.Has("access_log")
			l, ok := levelNames[strings.ToLower(v)]
			switch {
			case setAccess && access == nil:
				refuse(w, "access_log", "access log level not served by this daemon", "access_log", al)
				return
			case setAccess && !slices.Contains([]string{"all", "failures", "off"}, al):
				refuse(w, "access_log", fmt.Sprintf("bad access_log %q: want all, failures or off", al), "access_log", al)
				return
			case (setLevel || !setAccess) && !ok:
				refuse(w, "level", fmt.Sprintf("bad level %q: want debug, info, warn or error", v), "level", v)
				return
			}
			if setLevel {
				old := lv.Level()
				lv.Set(l)
				log.Info("admin: logging: level changed", "from", levelName(old), "to", levelName(l))
			}
			if setAccess {
				old := access.AccessLogLevel()
				if err := access.SetAccessLogLevel(al); err != nil {
					refuse(w, "access_log", err.Error(), "access_log", al)
					return
				}
				log.Info("admin: logging: access log level changed", "from", old, "to", al)
			}
			show(w)
		default:
			bad("logging")
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	}
}

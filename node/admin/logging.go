package admin

import (
	"fmt"
	"log/slog"
	"net/http"
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

// loggingHandler serves /logging: GET prints the level, POST ?level=
// changes it. A bad level or method is refused with 400/405, logged and
// counted, and changes nothing.
func loggingHandler(lv *slog.LevelVar, log *slog.Logger, bad func(string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			_, _ = fmt.Fprintf(w, "level: %s\n", levelName(lv.Level()))
		case http.MethodPost:
			v := r.URL.Query().Get("level")
			l, ok := levelNames[strings.ToLower(v)]
			if !ok {
				bad("logging")
				log.Warn("admin: logging: bad level refused", "level", v)
				http.Error(w, fmt.Sprintf("bad level %q: want debug, info, warn or error", v), http.StatusBadRequest)
				return
			}
			old := lv.Level()
			lv.Set(l)
			log.Info("admin: logging: level changed", "from", levelName(old), "to", levelName(l))
			_, _ = fmt.Fprintf(w, "level: %s\n", levelName(l))
		default:
			bad("logging")
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	}
}

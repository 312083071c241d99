package admin

import (
	"encoding/json"
	"log/slog"
	"net/http"
)

// connectionsHandler serves GET /connections: snapshot() as JSON, or 404
// when the daemon has no connection table.
func connectionsHandler(snapshot func() any, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if snapshot == nil {
			http.Error(w, "connections: this daemon keeps no live-connection table", http.StatusNotFound)
			return
		}
		b, err := json.MarshalIndent(snapshot(), "", "  ")
		if err != nil {
			log.Error("admin: connections: encode", "error", err)
			http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(b, '\n'))
	}
}

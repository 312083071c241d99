package watch

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Defaults of the API server probe.
const (
	DefaultProbeInterval = 5 * time.Second
	DefaultProbeTimeout  = 3 * time.Second
)

// ReadyzProbe asks the API server's /readyz (readable by any authenticated
// client). It returns nil for a client without a REST client (fakes).
func ReadyzProbe(client kubernetes.Interface) func(context.Context) error {
	var rc rest.Interface
	if d := client.Discovery(); d != nil {
		rc = d.RESTClient()
	}
	if c, ok := rc.(*rest.RESTClient); rc == nil || (ok && c == nil) {
		return nil
	}
	return func(ctx context.Context) error {
		if _, err := rc.Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
			return fmt.Errorf("API server /readyz: %w", err)
		}
		return nil
	}
}

// probeState is the last outcome of the API server probe.
type probeState struct {
	err   error
	since time.Time // first failure of the current run of failures
}

// probeLoop probes the API server every ProbeInterval until ctx ends. The
// reflectors retry a refused connection on their own without reporting it
// to the watch error handler, so only this tells that the API server is
// gone while nothing changes.
func (w *Watcher) probeLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.ProbeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, w.cfg.ProbeTimeout)
		err := w.cfg.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		w.recordProbe(err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Watcher) recordProbe(err error) {
	w.pmu.Lock()
	prev := w.probe
	w.probe.err = err
	switch {
	case err == nil:
		w.probe.since = time.Time{}
	case prev.err == nil:
		w.probe.since = w.cfg.Now()
	}
	w.pmu.Unlock()
	switch {
	case err != nil && prev.err == nil:
		w.log.Warn("API server unreachable; serving the last known state", "err", err)
	case err == nil && prev.err != nil:
		w.log.Info("API server reachable again", "unreachable_since", prev.since)
	}
}

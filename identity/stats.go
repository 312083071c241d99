package identity

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Observer receives the Manager's events, for metrics (the node agent wires
// it to Prometheus) without this package importing a metrics library.
// Methods are called synchronously from the manager's goroutines and must
// return quickly.
type Observer interface {
	// FetchCompleted follows every attempt to obtain a certificate; err is
	// nil on success. d is the attempt's duration (queueing excluded).
	FetchCompleted(id spiffeid.ID, d time.Duration, err error)
	// CertificateChanged reports the expiry of the certificate now served
	// for id, or the zero time when id has none any more.
	CertificateChanged(id spiffeid.ID, notAfter time.Time)
}

// Stats are the Manager's cumulative counters and current gauges.
type Stats struct {
	Identities    int    // identities tracked now
	CacheHits     uint64 // GetX509SVIDFor served from the cache
	CacheMisses   uint64 // GetX509SVIDFor that had to wait or failed
	Fetches       uint64 // attempts to obtain a certificate
	FetchFailures uint64 // attempts that failed (CA error or bad chain)
	QueuedHigh    int    // real-time requests waiting for a CSR slot
	QueuedLow     int    // background renewals waiting for a CSR slot
}

type nopObserver struct{}

func (nopObserver) FetchCompleted(spiffeid.ID, time.Duration, error) {}
func (nopObserver) CertificateChanged(spiffeid.ID, time.Time)        {}

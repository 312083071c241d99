package metrics

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
)

const (
	resultSuccess = "success"
	resultFailure = "failure"
)

var _ identity.Observer = (*Metrics)(nil)

// FetchCompleted implements identity.Observer: it counts a certificate
// request by result and observes its duration. The identity is not a label
// (expiry per identity is ambit_certificate_expiry_seconds).
func (m *Metrics) FetchCompleted(_ spiffeid.ID, d time.Duration, err error) {
	r := resultSuccess
	if err != nil {
		r = resultFailure
	}
	m.fetches.WithLabelValues(r).Inc()
	m.fetchDuration.Observe(d.Seconds())
}

// CertificateChanged implements identity.Observer.
func (m *Metrics) CertificateChanged(spiffeid.ID, time.Time) { m.certChanges.Inc() }

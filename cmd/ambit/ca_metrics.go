package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ambit-mesh/ambit/identity/ca"
)

// caMetrics adapts ca.Metrics to Prometheus.
type caMetrics struct {
	issued  prometheus.Counter
	denied  *prometheus.CounterVec
	latency prometheus.Histogram
}

func newCAMetrics(reg prometheus.Registerer) *caMetrics {
	m := &caMetrics{
		issued: prometheus.NewCounter(prometheus.CounterOpts{Name: "ambit_ca_issued_total", Help: "Workload certificates issued."}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambit_ca_denied_total", Help: "Signing requests denied, by reason."}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ambit_ca_sign_duration_seconds", Help: "Time to authorize and sign a request.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	for _, r := range ca.Reasons {
		m.denied.WithLabelValues(string(r))
	}
	reg.MustRegister(m.issued, m.denied, m.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *caMetrics) Issued(d time.Duration) {
	m.issued.Inc()
	m.latency.Observe(d.Seconds())
}

func (m *caMetrics) Denied(r ca.Reason) { m.denied.WithLabelValues(string(r)).Inc() }

// registerAdmissionMetrics exposes the work done before authentication
// (ca.AdmissionStats) as counters and gauges read at scrape time.
func registerAdmissionMetrics(reg prometheus.Registerer, srv *ca.Server) {
	adm := func(f func(ca.AdmissionStats) float64) func() float64 {
		return func() float64 { return f(srv.Stats().Admission) }
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ambit_ca_token_reviews_total", Help: "TokenReviews sent to the API server."},
			adm(func(s ca.AdmissionStats) float64 { return float64(s.Reviews) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ambit_ca_token_review_cache_hits_total", Help: "Requests answered from a cached TokenReview result."},
			adm(func(s ca.AdmissionStats) float64 { return float64(s.CacheHits) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ambit_ca_token_reviews_joined_total", Help: "Requests that waited for the same token's TokenReview in flight."},
			adm(func(s ca.AdmissionStats) float64 { return float64(s.Joined) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ambit_ca_token_reviews_reserved_total", Help: "TokenReviews of known node tokens run in a reserved slot."},
			adm(func(s ca.AdmissionStats) float64 { return float64(s.Reserved) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ambit_ca_token_reviews_in_flight", Help: "TokenReviews running now."},
			adm(func(s ca.AdmissionStats) float64 { return float64(s.InFlight) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ambit_ca_token_review_cache_entries", Help: "Cached TokenReview results."},
			adm(func(s ca.AdmissionStats) float64 { return float64(s.Cached) })),
	)
}

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

package metrics

import (
	"time"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	certExpiryDesc = prometheus.NewDesc("ambit_certificate_expiry_seconds",
		"Seconds until the certificate served for a workload identity expires (negative: expired).", []string{"identity"}, nil)
	certUsableDesc = prometheus.NewDesc("ambit_certificate_usable",
		"1 when a workload identity has a usable certificate, else 0.", []string{"identity"}, nil)
	informerDesc = prometheus.NewDesc("ambit_informer_synced",
		"1 when the informer has synced with the API server, else 0.", []string{"informer"}, nil)
	staleDesc = prometheus.NewDesc("ambit_informer_stale",
		"1 while the informer's watch is failing and its last known state is being served, else 0.", []string{"informer"}, nil)
)

// stateCollector reads the watch's state at scrape time through the Config
// functions. Its metrics are unchecked (Describe sends the descriptors of
// the functions that are configured).
type stateCollector struct{ m *Metrics }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	if c.m.cfg.Informers != nil {
		ch <- informerDesc
	}
	if c.m.cfg.InformersStale != nil {
		ch <- staleDesc
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	cfg := &c.m.cfg
	if cfg.Informers != nil {
		for name, synced := range cfg.Informers() {
			ch <- prometheus.MustNewConstMetric(informerDesc, prometheus.GaugeValue, boolValue(synced), name)
		}
	}
	if cfg.InformersStale != nil {
		for name, stale := range cfg.InformersStale() {
			ch <- prometheus.MustNewConstMetric(staleDesc, prometheus.GaugeValue, boolValue(stale), name)
		}
	}
}

// certCollector reads the certificates at scrape time.
type certCollector struct {
	list func() []identity.CertInfo
	now  func() time.Time
}

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- certExpiryDesc
	ch <- certUsableDesc
}

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	for _, ci := range c.list() {
		if ci.Released {
			// Lingering without renewals: not served, so neither its
			// usability nor its (approaching) expiry is an alert.
			continue
		}
		ch <- prometheus.MustNewConstMetric(certUsableDesc, prometheus.GaugeValue, boolValue(ci.Usable), ci.ID)
		if !ci.NotAfter.IsZero() {
			ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, ci.NotAfter.Sub(now).Seconds(), ci.ID)
		}
	}
}

// AddCertificates exports ambit_certificate_expiry_seconds and
// ambit_certificate_usable, read from list (identity.Manager.Snapshot) at
// scrape time. The identity manager is built after the metrics (they are
// its Observer), so it is added once it exists.
func (m *Metrics) AddCertificates(list func() []identity.CertInfo) error {
	return m.reg.Register(&certCollector{list: list, now: m.cfg.Now})
}

// AddEnrolledPods exports ambit_enrolled_pods, read from count at scrape
// time (the enroller, built after the metrics).
func (m *Metrics) AddEnrolledPods(count func() int) error {
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ambit_enrolled_pods",
		Help: "Pods on this node enrolled in the mesh."}, func() float64 { return float64(count()) }))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

package metrics

import (
	"errors"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/identity"
)

func TestStateCollectors(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	synced := map[string]bool{"pods": true, "services": false}
	pods := 3
	notAfter := now.Add(time.Hour)
	m := newMetrics(t, Config{
		Version:        "v0.1.0-test",
		Now:            func() time.Time { return now },
		Informers:      func() map[string]bool { return synced },
		InformersStale: func() map[string]bool { return map[string]bool{"pods": true, "services": false} },
	})
	if err := m.AddCertificates(func() []identity.CertInfo {
		return []identity.CertInfo{
			{ID: "spiffe://cluster.local/ns/shop/sa/frontend", Usable: true, NotAfter: notAfter},
			{ID: "spiffe://cluster.local/ns/shop/sa/pending"},
			{ID: "spiffe://cluster.local/ns/shop/sa/gone", Released: true, NotAfter: notAfter.Add(-2 * time.Hour)},
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddEnrolledPods(func() int { return pods }); err != nil {
		t.Fatal(err)
	}
	r := m.Registry()
	check := func(name string, labels map[string]string, want float64) {
		t.Helper()
		got, found := value(t, r, name, labels)
		if !found || math.Abs(got-want) > 1e-9 {
			t.Errorf("%s%v = %v (found %v), want %v", name, labels, got, found, want)
		}
	}
	check("ambit_certificate_expiry_seconds", map[string]string{"identity": "spiffe://cluster.local/ns/shop/sa/frontend"}, 3600)
	check("ambit_certificate_usable", map[string]string{"identity": "spiffe://cluster.local/ns/shop/sa/frontend"}, 1)
	check("ambit_certificate_usable", map[string]string{"identity": "spiffe://cluster.local/ns/shop/sa/pending"}, 0)
	if _, found := value(t, r, "ambit_certificate_expiry_seconds", map[string]string{"identity": "spiffe://cluster.local/ns/shop/sa/pending"}); found {
		t.Error("expiry reported for an identity without a certificate")
	}
	for _, name := range []string{"ambit_certificate_expiry_seconds", "ambit_certificate_usable"} {
		if _, found := value(t, r, name, map[string]string{"identity": "spiffe://cluster.local/ns/shop/sa/gone"}); found {
			t.Errorf("%s reported for a released identity (lingering, not renewed)", name)
		}
	}
	check("ambit_informer_synced", map[string]string{"informer": "pods"}, 1)
	check("ambit_informer_synced", map[string]string{"informer": "services"}, 0)
	check("ambit_informer_stale", map[string]string{"informer": "pods"}, 1)
	check("ambit_informer_stale", map[string]string{"informer": "services"}, 0)
	check("ambit_enrolled_pods", nil, 3)
	check("ambit_build_info", map[string]string{"version": "v0.1.0-test", "go_version": runtime.Version()}, 1)

	// Scrape time: the values follow the functions.
	now = now.Add(30 * time.Minute)
	synced = map[string]bool{"pods": true, "services": true}
	pods = 5
	check("ambit_certificate_expiry_seconds", map[string]string{"identity": "spiffe://cluster.local/ns/shop/sa/frontend"}, 1800)
	check("ambit_informer_synced", map[string]string{"informer": "services"}, 1)
	check("ambit_enrolled_pods", nil, 5)

	text := scrape(t, m.Handler())
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_cpu_seconds_total", "ambit_build_info"} {
		if !containsLine(text, name+" ") && !containsLine(text, name+"{") {
			t.Errorf("scrape lacks %s", name)
		}
	}
}

func containsLine(text, prefix string) bool {
	for i := 0; i+len(prefix) <= len(text); i++ {
		if (i == 0 || text[i-1] == '\n') && text[i:i+len(prefix)] == prefix {
			return true
		}
	}
	return false
}

func TestIdentityObserver(t *testing.T) {
	m := newMetrics(t, Config{})
	var o identity.Observer = m
	o.FetchCompleted(srcID, 20*time.Millisecond, nil)
	o.FetchCompleted(srcID, 30*time.Millisecond, nil)
	o.FetchCompleted(srcID, time.Second, errors.New("ca unavailable"))
	o.CertificateChanged(srcID, time.Now().Add(time.Hour))
	r := m.Registry()
	if got, _ := value(t, r, "ambit_identity_fetches_total", map[string]string{"result": "success"}); got != 2 {
		t.Errorf("fetches{success} = %v, want 2", got)
	}
	if got, _ := value(t, r, "ambit_identity_fetches_total", map[string]string{"result": "failure"}); got != 1 {
		t.Errorf("fetches{failure} = %v, want 1", got)
	}
	if got, _ := value(t, r, "ambit_identity_certificate_changes_total", nil); got != 1 {
		t.Errorf("certificate changes = %v, want 1", got)
	}
	mfs, _ := r.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "ambit_identity_fetch_duration_seconds" {
			if c := mf.GetMetric()[0].GetHistogram().GetSampleCount(); c != 3 {
				t.Errorf("fetch duration samples = %d, want 3", c)
			}
			return
		}
	}
	t.Error("no ambit_identity_fetch_duration_seconds")
}

package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/identity/identitytest"
)

// BenchmarkIssue: the signing step alone (ECDSA P-256 intermediate).
func BenchmarkIssue(b *testing.B) {
	root := identitytest.MustCA("cluster.local")
	inter, _ := root.NewIntermediate()
	is, err := ca.NewIssuer(ca.IssuerConfig{Chain: []*x509.Certificate{inter.Cert}, Key: inter.Key})
	if err != nil {
		b.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := wl("shop", "web")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := is.Issue(k.Public(), id); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkSignHTTPS: the whole CA path over real HTTPS on 127.0.0.1
// (request, token check, CSR checks, pod lookup, signing, response) with
// parallel clients on kept-alive connections. The CSR is built once: key
// generation is the node's cost, not the CA's.
func BenchmarkSignHTTPS(b *testing.B) {
	env, _ := startEnv(b, func(c *ca.Config) { c.BurstPerNode = 1 << 30; c.RatePerNode = 1 << 30 })
	env.Pods.Add("node-a", "shop", "web")
	client, err := env.Client()
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	id := wl("shop", "web")
	csr := csrFor(b, p256(b), &x509.CertificateRequest{URIs: []*url.URL{id.URL()}})
	ctx := context.Background()
	if _, err := client.Sign(ctx, csr, id); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Sign(ctx, csr, id); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkPrefetchOverHTTPS: time from Prefetch of a new identity to a
// usable certificate (key generation, CSR, HTTPS round trip to the CA,
// chain check), one identity at a time, reporting p50 and p99.
func BenchmarkPrefetchOverHTTPS(b *testing.B) {
	env, _ := startEnv(b, func(c *ca.Config) { c.BurstPerNode = 1 << 30; c.RatePerNode = 1 << 30 })
	client, err := env.Client()
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	m, err := identity.NewManager(identity.ManagerConfig{Provider: identity.CSRProvider{Signer: client}, Bundle: env.Bundle,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	warm := wl("warm", "up")
	env.Pods.Add("node-a", "warm", "up")
	if err := m.Prefetch(ctx, warm); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprintf("sa-%d", i)
		env.Pods.Add("node-a", "bench", ids[i])
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := wl("bench", ids[i])
		start := time.Now()
		if err := m.Prefetch(ctx, id); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		m.Forget(id)
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

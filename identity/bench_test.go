package identity_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
)

// BenchmarkManagerCacheHit: what a TLS handshake pays to get its
// certificate from a warm Manager, with concurrent handshakes.
func BenchmarkManagerCacheHit(b *testing.B) {
	ca := identitytest.MustCA("cluster.local")
	m, err := identity.NewManager(identity.ManagerConfig{
		Provider: identity.CSRProvider{Signer: &identitytest.FakeSigner{CA: ca}}, Bundle: ca.Bundle(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	id := wl("shop", "web")
	ctx := context.Background()
	if err := m.Prefetch(ctx, id); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.GetX509SVIDFor(ctx, id); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

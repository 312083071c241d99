package wlapi_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/identity/wlapi"
)

// fakeAgent is an in-process Workload API server (the X.509 part of a SPIRE
// agent): every stream gets the current response and each later one.
type fakeAgent struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	mu      sync.Mutex
	cur     *workload.X509SVIDResponse
	changed chan struct{}
}

func (a *fakeAgent) set(r *workload.X509SVIDResponse) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cur = r
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *fakeAgent) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	for {
		a.mu.Lock()
		cur, ch := a.cur, a.changed
		a.mu.Unlock()
		if err := stream.Send(cur); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func response(t *testing.T, roots []*x509.Certificate, svids ...*x509svid.SVID) *workload.X509SVIDResponse {
	t.Helper()
	var rootDER []byte
	for _, r := range roots {
		rootDER = append(rootDER, r.Raw...)
	}
	resp := &workload.X509SVIDResponse{}
	for _, s := range svids {
		certs, key, err := s.MarshalRaw()
		if err != nil {
			t.Fatal(err)
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{SpiffeId: s.ID.String(), X509Svid: certs, X509SvidKey: key, Bundle: rootDER})
	}
	return resp
}

func TestWorkloadAPIProvider(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca := identitytest.MustCA("cluster.local")
	self := spiffeid.RequireFromString("spiffe://cluster.local/ns/ambit-system/sa/ambit")
	web, _ := identity.Workload(td, "shop", "web")
	agent := &fakeAgent{changed: make(chan struct{})}
	agent.set(response(t, []*x509.Certificate{ca.Cert}, ca.MustMint(self), ca.MustMint(web)))

	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(gs, agent)
	go gs.Serve(ln)
	defer gs.Stop()

	// The store starts with a stale root; the agent's push replaces it.
	stale := identitytest.MustCA("cluster.local")
	store, _ := identity.NewBundleStore(identity.BundleConfig{TrustDomain: td, Roots: []*x509.Certificate{stale.Cert}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := wlapi.New(ctx, wlapi.Config{Addr: "unix://" + sock, Bundle: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if b, _ := store.GetX509BundleForTrustDomain(td); !b.HasX509Authority(ca.Cert) || b.HasX509Authority(stale.Cert) {
		t.Fatal("bundle not replaced by the pushed one")
	}
	m, err := identity.NewManager(identity.ManagerConfig{Provider: p, Bundle: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, id := range []spiffeid.ID{self, web} {
		s, err := m.GetX509SVIDFor(ctx, id)
		if err != nil || s.ID != id {
			t.Fatalf("%s: %v", id, err)
		}
	}
	other, _ := identity.Workload(td, "shop", "db")
	if _, err := m.GetX509SVIDFor(ctx, other); !errors.Is(err, identity.ErrNoCertificate) {
		t.Fatalf("identity not granted by the agent: %v", err)
	}
	// A rotation pushed by the agent is visible to the provider.
	before, _ := p.FetchSVID(ctx, web)
	agent.set(response(t, []*x509.Certificate{ca.Cert}, ca.MustMint(self), ca.MustMint(web)))
	deadline := time.Now().Add(5 * time.Second)
	for {
		now, err := p.FetchSVID(ctx, web)
		if err == nil && !now.Certificates[0].Equal(before.Certificates[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pushed rotation not seen")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWorkloadAPINoEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := wlapi.New(ctx, wlapi.Config{Addr: "unix://" + filepath.Join(t.TempDir(), "none.sock"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		t.Fatal("New succeeded without an endpoint")
	}
}

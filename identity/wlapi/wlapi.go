// Package wlapi is the SPIFFE Workload API certificate source: for
// deployments that already run SPIRE, the node daemon takes its
// certificates from the agent's Workload API socket through go-spiffe's
// workloadapi client instead of ambit's CA.
//
// The Workload API serves a caller the SVIDs it is entitled to. That is
// always the daemon's own identity; it is per-workload where the SPIRE
// registration entries grant the daemon the identities of the workloads on
// its node (several SVIDs in one X509Context). Provider keeps the latest
// pushed X509Context and answers FetchSVID from it, so the identity.Manager
// on top checks, caches and serves those SVIDs like any other source;
// identities the endpoint does not give fail with identity.ErrNoCertificate.
// The trust bundle of the trust domain, pushed with every update, replaces
// the roots of an optional identity.BundleStore.
package wlapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/ambit-mesh/ambit/identity"
)

// Config configures a Provider.
type Config struct {
	// Addr is the Workload API endpoint, e.g. unix:///run/spire/agent.sock.
	// Optional: SPIFFE_ENDPOINT_SOCKET when empty.
	Addr string
	// Bundle, when set, gets the pushed roots of its trust domain. Optional.
	Bundle *identity.BundleStore
	// Logger. Optional.
	Logger *slog.Logger
}

// Provider is an identity.Provider over the Workload API.
type Provider struct {
	cfg    Config
	client *workloadapi.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	svids   map[spiffeid.ID]*x509svid.SVID
	lastErr error
	first   chan struct{}
	once    sync.Once
}

var _ identity.Provider = (*Provider)(nil)

// New connects, starts watching, and blocks until the first X509Context
// arrives or ctx is done. Close stops it.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var opts []workloadapi.ClientOption
	if cfg.Addr != "" {
		opts = append(opts, workloadapi.WithAddr(cfg.Addr))
	}
	client, err := workloadapi.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("wlapi: connect: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	p := &Provider{cfg: cfg, client: client, cancel: cancel, done: make(chan struct{}), first: make(chan struct{})}
	go func() {
		defer close(p.done)
		_ = client.WatchX509Context(wctx, p)
	}()
	select {
	case <-p.first:
		return p, nil
	case <-ctx.Done():
		p.Close()
		p.mu.Lock()
		last := p.lastErr
		p.mu.Unlock()
		return nil, fmt.Errorf("wlapi: no X509 context yet: %w", errors.Join(ctx.Err(), last))
	}
}

// OnX509ContextUpdate implements workloadapi.X509ContextWatcher.
func (p *Provider) OnX509ContextUpdate(c *workloadapi.X509Context) {
	svids := make(map[spiffeid.ID]*x509svid.SVID, len(c.SVIDs))
	for _, s := range c.SVIDs {
		if _, dup := svids[s.ID]; !dup { // the first one of an ID is the preferred one
			svids[s.ID] = s
		}
	}
	if p.cfg.Bundle != nil && c.Bundles != nil {
		td := p.cfg.Bundle.TrustDomain()
		if b, ok := c.Bundles.Get(td); ok && len(b.X509Authorities()) > 0 {
			if err := p.cfg.Bundle.SetRoots(b.X509Authorities()); err != nil {
				p.cfg.Logger.Warn("wlapi: bundle update refused", "trust_domain", td.Name(), "err", err)
			}
		}
	}
	p.mu.Lock()
	p.svids, p.lastErr = svids, nil
	p.mu.Unlock()
	p.cfg.Logger.Debug("wlapi: X509 context update", "svids", len(svids))
	p.once.Do(func() { close(p.first) })
}

// OnX509ContextWatchError implements workloadapi.X509ContextWatcher. The
// client keeps retrying; the last SVIDs stay in use.
func (p *Provider) OnX509ContextWatchError(err error) {
	p.mu.Lock()
	p.lastErr = err
	p.mu.Unlock()
	p.cfg.Logger.Warn("wlapi: watch error", "err", err)
}

// FetchSVID implements identity.Provider from the latest pushed context.
func (p *Provider) FetchSVID(_ context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.svids[id]; ok {
		return s, nil
	}
	if p.lastErr != nil {
		return nil, fmt.Errorf("%w for %s: Workload API: %w", identity.ErrNoCertificate, id, p.lastErr)
	}
	return nil, fmt.Errorf("%w for %s: the Workload API does not issue it to this process (%d SVIDs)", identity.ErrNoCertificate, id, len(p.svids))
}

// IDs lists the identities of the latest context.
func (p *Provider) IDs() []spiffeid.ID {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]spiffeid.ID, 0, len(p.svids))
	for id := range p.svids {
		out = append(out, id)
	}
	return out
}

// Close stops watching and closes the connection.
func (p *Provider) Close() error {
	p.cancel()
	err := p.client.Close()
	<-p.done
	return err
}

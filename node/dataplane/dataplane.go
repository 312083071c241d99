package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/tunnel"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrConfig is wrapped by Start and NewNode when a required field is
// missing or invalid.
var ErrConfig = errors.New("dataplane: invalid configuration")

// Router decides where a captured outbound connection goes. *tables.Tables
// satisfies it.
type Router interface {
	Resolve(dst netip.AddrPort, src netip.Addr) tables.Route
}

// Authorizer decides inbound connections. *authz.Engine satisfies it.
type Authorizer interface {
	Decide(authz.Request) authz.Decision
}

// Capture is the part of the capture layer the data path uses.
// *redirect.Manager satisfies it.
type Capture interface {
	// Listeners are the pod's 15001/15006/15008 listeners (never closed here).
	Listeners(id string) (redirect.Listeners, error)
	// OriginalDst is the destination the app connected to, for a connection
	// accepted on the outbound listener.
	OriginalDst(c net.Conn) (netip.AddrPort, error)
	// Dial connects from inside the pod's netns with ambit's marked socket.
	Dial(ctx context.Context, id, network, address string) (net.Conn, error)
}

// Config configures the data path of one enrolled pod.
type Config struct {
	// PodID is the pod's key in Capture (redirect.PodNetns.ID). Required.
	PodID string
	// Identity is the pod's SPIFFE ID: presented by its tunnels both ways.
	// Required.
	Identity spiffeid.ID
	// Addrs are the pod's IPs: served by its HBONE listener and used as the
	// source address of its outbound connections. Required.
	Addrs []netip.Addr
	// Workload describes the pod to the policy engine (namespace, name,
	// labels). Required: Namespace must be set.
	Workload authz.Workload
	// Capture gives listeners, original destinations and marked dials.
	// Required.
	Capture Capture
	// Router resolves outbound destinations. Required.
	Router Router
	// Authorizer decides inbound connections. Required.
	Authorizer Authorizer
	// SVIDs gives the pod's certificate. Required.
	SVIDs identity.SVIDSource
	// Bundles verify peers. Required.
	Bundles x509bundle.Source
	// Live, when set, registers every allowed inbound connection, HBONE
	// stream (through tunnel.Decision.Watch) and plaintext alike, with the
	// authz.Request it was allowed on, so that Live.Recheck after a policy
	// change closes those now denied: both ends see a reset and the hooks
	// report tunnel.OutcomeRevoked. Optional.
	Live *authz.Live
	// Hooks observe every connection (tunnel and non-tunnel paths).
	// Optional.
	Hooks tunnel.Hooks
	// Settings tune the tunnel and splices. Optional.
	Settings tunnel.Settings
	// Guard caps TLS handshakes and streams per source identity; a Node
	// shares one among its pods. Optional: default a Guard of the pod's own.
	Guard *tunnel.Guard
	// ReservedPorts are the daemon's ports besides the capture listeners
	// (admin, metrics): the HBONE server refuses CONNECTs to them, and to
	// the ports of the pod's 15001/15006/15008 listeners, as loops.
	// Optional.
	ReservedPorts []uint16
	// DialTimeout bounds a passthrough or app dial. Optional, default 10 s.
	DialTimeout time.Duration
	// ClusterDomain makes a Service's hostname (<name>.<namespace>.svc.
	// <domain>), sent to the destination when a pod dialled a Service and
	// reported to the hooks as ConnInfo.Forwarded.Host. Optional, default
	// DefaultClusterDomain.
	ClusterDomain string
	// Logger. Optional, default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Optional, default time.Now.
	Now func() time.Time

	// local finds the data path serving a pod address of this node (set by
	// Node unless NodeConfig.TunnelSameNode): HBONE routes to those pods take
	// the same-node shortcut (local.go).
	local func(netip.Addr) *Pod
}

// Stats counts what one pod's data path did, for metrics and tests.
type Stats struct {
	OutboundAccepted    int64 // connections accepted on 15001
	OutboundHBONE       int64 // tunnelled and spliced
	OutboundPassthrough int64 // dialed directly and spliced
	OutboundDenied      int64 // refused by the route
	OutboundFailed      int64 // tunnel or dial failed
	NoOriginalDst       int64 // accepted without a recorded destination (closed)
	InboundPlain        int64 // connections accepted on 15006
	InboundPlainDenied  int64 // refused by authorization (e.g. STRICT)
	InboundPlainFailed  int64 // the app could not be dialed
	InboundPlainRevoked int64 // closed after a policy change (Live.Recheck or the check at registration)
	InboundHBONERevoked int64 // HBONE streams revoked after a policy change (likewise)
	OutboundLocal       int64 // HBONE routes to a pod of this node carried by the same-node shortcut
	InboundLocal        int64 // same-node shortcut connections to this pod
	InboundLocalDenied  int64 // of those, refused by authorization
	InboundLocalRevoked int64 // of those, closed after a policy change
}

type counters struct {
	outAccepted, outHBONE, outPass, outDenied, outFailed, noOrigDst atomic.Int64
	inPlain, inPlainDenied, inPlainFailed, inPlainRevoked           atomic.Int64
	inHBONERevoked                                                  atomic.Int64
	outLocal, inLocal, inLocalDenied, inLocalRevoked                atomic.Int64
}

// Pod is the running data path of one enrolled pod.
type Pod struct {
	cfg    Config
	log    *slog.Logger
	client *tunnel.Client
	server *tunnel.Server
	ls     redirect.Listeners
	out    *stoppable
	plain  *stoppable
	hbone  *stoppable

	// ctx is the connections' context: cancelled when Stop's deadline passes.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stats  counters

	// reserved are the ports a CONNECT may not reach (loops), as the HBONE
	// server has them; the same-node shortcut checks them too.
	reserved map[uint16]bool
	// Same-node shortcut connections into this pod, drained by Stop.
	localMu       sync.Mutex
	localStopping bool
	localWG       sync.WaitGroup

	stopOnce sync.Once
}

func (c *Config) validate() error {
	var missing []string
	if c.PodID == "" {
		missing = append(missing, "PodID")
	}
	if c.Identity.IsZero() {
		missing = append(missing, "Identity")
	}
	if len(c.Addrs) == 0 {
		missing = append(missing, "Addrs")
	}
	if c.Workload.Namespace == "" {
		missing = append(missing, "Workload.Namespace")
	}
	if c.Capture == nil {
		missing = append(missing, "Capture")
	}
	if c.Router == nil {
		missing = append(missing, "Router")
	}
	if c.Authorizer == nil {
		missing = append(missing, "Authorizer")
	}
	if c.SVIDs == nil {
		missing = append(missing, "SVIDs")
	}
	if c.Bundles == nil {
		missing = append(missing, "Bundles")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %v", ErrConfig, missing)
	}
	for _, a := range c.Addrs {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("%w: pod address %v", ErrConfig, a)
		}
	}
	return nil
}

// Start runs the three data paths of one pod on its capture listeners until
// Stop. ctx bounds only the start itself.
func Start(ctx context.Context, cfg Config) (*Pod, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = DefaultClusterDomain
	}
	ls, err := cfg.Capture.Listeners(cfg.PodID)
	if err != nil {
		return nil, fmt.Errorf("dataplane: listeners of pod %s: %w", cfg.PodID, err)
	}
	if ls.Outbound == nil || ls.Inbound == nil || ls.HBONE == nil {
		return nil, fmt.Errorf("%w: pod %s lacks a listener", ErrConfig, cfg.PodID)
	}
	p := &Pod{cfg: cfg, ls: ls, log: cfg.Logger.With("pod", cfg.PodID), reserved: map[uint16]bool{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	reserved := reservedPorts(cfg.ReservedPorts, ls)
	for _, port := range reserved {
		p.reserved[port] = true
	}

	p.client, err = tunnel.NewClient(tunnel.ClientConfig{
		SVIDs:   cfg.SVIDs,
		Bundles: cfg.Bundles,
		Dial: func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			return cfg.Capture.Dial(ctx, cfg.PodID, "tcp", dst.String())
		},
		Logger:   p.log,
		Hooks:    cfg.Hooks,
		Settings: cfg.Settings,
	})
	if err != nil {
		p.cancel()
		return nil, fmt.Errorf("dataplane: tunnel client: %w", err)
	}
	p.server, err = tunnel.NewServer(tunnel.ServerConfig{
		SVIDs:         cfg.SVIDs,
		Bundles:       cfg.Bundles,
		Authorizer:    tunnel.AuthorizerFunc(p.authorizeHBONE),
		Dial:          p.dialApp,
		Logger:        p.log,
		Hooks:         cfg.Hooks,
		Settings:      cfg.Settings,
		Guard:         cfg.Guard,
		ReservedPorts: reserved,
	})
	if err != nil {
		p.client.Close()
		p.cancel()
		return nil, fmt.Errorf("dataplane: tunnel server: %w", err)
	}
	p.out, p.plain, p.hbone = newStoppable(ls.Outbound), newStoppable(ls.Inbound), newStoppable(ls.HBONE)
	p.goLoop(func() { p.acceptLoop(p.out, p.handleOutbound) })
	p.goLoop(func() { p.acceptLoop(p.plain, p.handlePlain) })
	p.goLoop(func() {
		w := tunnel.Workload{ID: cfg.Identity, Addrs: cfg.Addrs}
		err := p.server.Serve(p.ctx, p.hbone, w)
		if err != nil && !errors.Is(err, tunnel.ErrClosed) && !errors.Is(err, context.Canceled) && !errors.Is(err, net.ErrClosed) {
			p.log.Error("dataplane: HBONE listener failed", "err", err)
		}
	})
	p.log.Info("dataplane: pod started", "identity", cfg.Identity.String(), "addrs", cfg.Addrs)
	return p, nil
}

func (p *Pod) goLoop(f func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}

// Quiesce keeps accepting until none of the pod's listeners has accepted a
// connection for quiet, or until ctx is done. A daemon that is being replaced
// calls it before Stop: its successor has already put its own listeners into
// the capture's sockmap, so nothing new arrives here, but connections that
// landed just before the takeover still wait in these listeners' accept
// queues; stopping at once would leave them to be reset when the listeners
// close. It returns when the queues have been empty for quiet.
func (p *Pod) Quiesce(ctx context.Context, quiet time.Duration) {
	for {
		since := time.Now().Add(-quiet)
		if p.out.idleSince(since) && p.plain.idleSince(since) && p.hbone.idleSince(since) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(quiet / 4):
		}
	}
}

// Stop stops accepting on the pod's listeners (without closing them: they
// belong to the capture), lets live connections drain until ctx is done,
// then cuts them. It returns ctx.Err() when connections had to be cut.
func (p *Pod) Stop(ctx context.Context) error {
	var err error
	p.stopOnce.Do(func() {
		p.out.stop()
		p.plain.stop()
		p.localMu.Lock()
		p.localStopping = true
		p.localMu.Unlock()
		done := make(chan error, 1)
		go func() { done <- p.server.Shutdown(ctx) }()
		waited := make(chan struct{})
		go func() {
			p.wg.Wait()
			p.localWG.Wait()
			close(waited)
		}()
		select {
		case <-waited:
		case <-ctx.Done():
			err = ctx.Err()
			p.cancel()
			<-waited
		}
		if serr := <-done; serr != nil && err == nil {
			err = serr
		}
		p.cancel()
		p.client.Close()
		p.log.Info("dataplane: pod stopped")
	})
	return err
}

// Stats returns a snapshot of the pod's counters.
func (p *Pod) Stats() Stats {
	s := &p.stats
	return Stats{
		OutboundAccepted: s.outAccepted.Load(), OutboundHBONE: s.outHBONE.Load(),
		OutboundPassthrough: s.outPass.Load(), OutboundDenied: s.outDenied.Load(),
		OutboundFailed: s.outFailed.Load(), NoOriginalDst: s.noOrigDst.Load(),
		InboundPlain: s.inPlain.Load(), InboundPlainDenied: s.inPlainDenied.Load(),
		InboundPlainFailed: s.inPlainFailed.Load(), InboundPlainRevoked: s.inPlainRevoked.Load(),
		InboundHBONERevoked: s.inHBONERevoked.Load(),
		OutboundLocal:       s.outLocal.Load(), InboundLocal: s.inLocal.Load(),
		InboundLocalDenied: s.inLocalDenied.Load(), InboundLocalRevoked: s.inLocalRevoked.Load(),
	}
}

// TunnelStats returns the counters of the pod's tunnel client and server.
func (p *Pod) TunnelStats() (client, server tunnel.Stats) {
	return p.client.Stats(), p.server.Stats()
}

// acceptLoop accepts until the listener is stopped, handling each
// connection on its own goroutine.
func (p *Pod) acceptLoop(ln *stoppable, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			p.log.Error("dataplane: accept failed", "listener", ln.Addr().String(), "err", err)
			select {
			case <-time.After(50 * time.Millisecond):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			handle(c)
		}()
	}
}

// failed reports a connection that ended before it was established (the
// tunnel's convention: OnEnd without OnStart).
func (p *Pod) failed(ci *tunnel.ConnInfo) {
	if p.cfg.Hooks.OnEnd != nil {
		ci.Duration = p.cfg.Now().Sub(ci.Start)
		p.cfg.Hooks.OnEnd(ci)
	}
}

// refuse resets c (SO_LINGER 0), so the app sees its connection refused
// rather than a clean end of stream.
func refuse(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// splice joins a (the downstream: the app's or the client's socket) and
// b until both directions end and reports it, with ConnInfo.Live read from
// a's TCP counters.
// revoked, when it holds a decision by then, says a policy change closed
// the connection.
func (p *Pod) splice(ci *tunnel.ConnInfo, a, b net.Conn, revoked *atomic.Pointer[authz.Decision]) {
	ci.Live = liveBytes(a)
	if p.cfg.Hooks.OnStart != nil {
		p.cfg.Hooks.OnStart(ci)
	}
	sent, recv, err := tunnel.Splice(p.ctx, a, b, p.cfg.Settings)
	ci.BytesSent, ci.BytesRecv = sent, recv
	switch {
	case revoked != nil && revoked.Load() != nil:
		d := revoked.Load()
		// As the tunnel reports a revoked HBONE stream.
		reason := "policy changed"
		if d.Reason != "" {
			reason += ": " + d.Reason
		}
		ci.Outcome, ci.Reason, ci.Policy = tunnel.OutcomeRevoked, reason, d.Policy
		ci.Err = fmt.Errorf("%w: %s", tunnel.ErrRevoked, reason)
	case p.ctx.Err() != nil:
		ci.Outcome, ci.Err = tunnel.OutcomeShutdown, err
	case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		ci.Outcome, ci.Err = tunnel.OutcomeReset, err
	}
	if p.cfg.Hooks.OnEnd != nil {
		ci.Duration = p.cfg.Now().Sub(ci.Start)
		p.cfg.Hooks.OnEnd(ci)
	}
}

// CapturePorts are the well-known ports of the capture listeners (outbound
// 15001, plaintext inbound 15006, HBONE 15008). The listeners themselves
// sit on ephemeral ports (sk_lookup steers to them), so both are reserved.
var CapturePorts = []uint16{15001, 15006, tunnel.HBONEPort}

// reservedPorts are the ports the HBONE server refuses as loops: the
// configured ones, the capture's well-known ports and the ports the pod's
// capture listeners are bound to.
func reservedPorts(extra []uint16, ls redirect.Listeners) []uint16 {
	ports := append(append([]uint16(nil), extra...), CapturePorts...)
	for _, ln := range []net.Listener{ls.Outbound, ls.Inbound, ls.HBONE} {
		if p := addrPortOf(ln.Addr()).Port(); p != 0 {
			ports = append(ports, p)
		}
	}
	return ports
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

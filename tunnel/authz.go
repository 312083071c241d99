package tunnel

import (
	"context"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// AuthzRequest is what an Authorizer decides on. Every field comes from the
// verified TLS session or the TCP connection, never from request headers.
type AuthzRequest struct {
	Source      spiffeid.ID    // verified client identity (zero for plaintext)
	SourceAddr  netip.AddrPort // TCP peer address of the tunnel (the believed source)
	Destination netip.AddrPort // CONNECT authority (pod IP:target port)
	Workload    spiffeid.ID    // the destination workload's identity
}

// Decision is an Authorizer's answer. Reason and Policy end up in the log
// line and the ConnInfo of a denied connection.
type Decision struct {
	Allow  bool
	Reason string
	Policy string

	// Watch, optional on an allowing Decision (ignored on a denying one),
	// keeps the stream revocable after it was allowed, for an authorizer
	// whose policies can change while connections live. The Server calls
	// it once, right after the decision and before the destination is
	// dialed, with revoke, and calls the returned done (which may be nil)
	// exactly once when the stream has ended, however it ended.
	//
	// revoke(d) ends the stream because authorization was withdrawn: d's
	// Reason and Policy say why (its Allow and Watch are ignored). It never
	// blocks and may be called from any goroutine, at any time, any number
	// of times: the first call counts, calls after the stream ended do
	// nothing. While the destination is being dialed the stream is refused
	// with 401 (OutcomeDenied); once established it is reset both ways (the
	// client sees RST_STREAM CANCEL, the destination a TCP reset) and
	// reported with OutcomeRevoked and an error wrapping ErrRevoked.
	Watch func(revoke func(Decision)) (done func())
}

// Authorizer decides whether a CONNECT may reach its destination. It is
// called once per stream before anything is dialed; it must be safe for
// concurrent use and should return quickly.
type Authorizer interface {
	Authorize(ctx context.Context, r AuthzRequest) Decision
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(ctx context.Context, r AuthzRequest) Decision

// Authorize calls f.
func (f AuthorizerFunc) Authorize(ctx context.Context, r AuthzRequest) Decision { return f(ctx, r) }

// AllowAll returns an Authorizer that allows every connection (tests, demo,
// and until the policy engine exists).
func AllowAll() Authorizer {
	return AuthorizerFunc(func(context.Context, AuthzRequest) Decision {
		return Decision{Allow: true, Reason: "allow all"}
	})
}

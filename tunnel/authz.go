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

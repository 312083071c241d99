package identity

import (
	"context"
	"errors"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrNoCertificate is returned (wrapped) by an SVIDSource that has no valid
// certificate for the identity asked for. Connections that need it fail;
// connections of other identities are unaffected.
var ErrNoCertificate = errors.New("identity: no valid certificate")

// SVIDSource gives the current X.509 SVID (certificate chain and private key)
// of a workload identity. It is consulted on every TLS handshake, so an
// implementation that rotates certificates needs no cooperation from its
// callers. Implementations must be safe for concurrent use and must not
// block longer than ctx allows.
//
// The trust bundles that verify peers come through go-spiffe's
// x509bundle.Source: a trust domain is trusted exactly when that source
// returns a bundle for it (aliases are trust domains that resolve to the
// same roots).
type SVIDSource interface {
	GetX509SVIDFor(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error)
}

// SVIDSourceFunc adapts a function to SVIDSource.
type SVIDSourceFunc func(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error)

// GetX509SVIDFor calls f.
func (f SVIDSourceFunc) GetX509SVIDFor(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	return f(ctx, id)
}

// Workload builds the SPIFFE ID of a Kubernetes workload:
// spiffe://<td>/ns/<namespace>/sa/<serviceAccount>.
func Workload(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
}

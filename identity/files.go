package identity

import (
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FileProvider is the static-files certificate source, for tests and
// workloads outside Kubernetes: a PEM certificate chain (leaf first) and its
// PEM private key, re-read on every fetch so that replacing the files
// rotates the certificate. It serves only the identity in the certificate.
// Pair it with a BundleStore built from LoadRoots(bundle file).
type FileProvider struct {
	CertFile string // required
	KeyFile  string // required
}

// FetchSVID implements Provider.
func (p FileProvider) FetchSVID(_ context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	svid, err := x509svid.Load(p.CertFile, p.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("identity: files %s, %s: %w", p.CertFile, p.KeyFile, err)
	}
	if svid.ID != id {
		return nil, fmt.Errorf("identity: %s holds %s, not %s", p.CertFile, svid.ID, id)
	}
	return svid, nil
}

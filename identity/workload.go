package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrNotWorkload is returned by ParseWorkload for an ID that is not of the
// form spiffe://<td>/ns/<namespace>/sa/<service account>.
var ErrNotWorkload = errors.New("identity: not a workload identity (want /ns/<namespace>/sa/<service account>)")

// ParseWorkload returns the namespace and service account of a workload
// identity built by Workload. It is the one place in ambit that looks inside
// a SPIFFE ID's path; the result is checked by rebuilding the ID, so
// whatever it returns round-trips exactly.
func ParseWorkload(id spiffeid.ID) (namespace, serviceAccount string, err error) {
	if id.IsZero() {
		return "", "", fmt.Errorf("%w: empty ID", ErrNotWorkload)
	}
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" || seg[1] == "" || seg[3] == "" {
		return "", "", fmt.Errorf("%w: %q", ErrNotWorkload, id.String())
	}
	back, err := Workload(id.TrustDomain(), seg[1], seg[3])
	if err != nil || back != id {
		return "", "", fmt.Errorf("%w: %q", ErrNotWorkload, id.String())
	}
	return seg[1], seg[3], nil
}

package authz

import (
	"net/netip"
	"strings"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Workload is the destination pod a connection is for.
type Workload struct {
	// Namespace of the pod (required).
	Namespace string
	// Name of the pod. Optional, but the engine caches the policies that
	// apply to a workload under {Namespace, Name}: without a name every
	// decision recomputes them.
	Name string
	// Labels of the pod, matched against policy selectors.
	Labels map[string]string
	// Identity of the pod (informational; not used for matching).
	Identity spiffeid.ID
}

// Source is the peer of a connection.
type Source struct {
	// Principal is the verified SPIFFE ID of the peer; zero when the
	// connection carries no verified identity (plaintext).
	Principal spiffeid.ID
	// IP is the peer's address (for HBONE, the original source address).
	IP netip.Addr
}

// Destination is where the connection goes, as the pod sees it: the pod IP
// and the target (container) port, never a Service VIP or Service port.
type Destination struct {
	IP   netip.Addr
	Port uint16
}

// Request is one connection to authorize.
type Request struct {
	Workload    Workload
	Source      Source
	Destination Destination
	// Secure is true when the connection arrived over mTLS (HBONE) with
	// Source.Principal verified. When false, Source.Principal is ignored.
	Secure bool
}

// Decision is the outcome of Decide.
type Decision struct {
	Allow bool
	// Reason is one of the Reason* constants.
	Reason string
	// Policy is "namespace/name" of the AuthorizationPolicy or
	// PeerAuthentication that decided, or "" when none did.
	Policy string
	// Audit lists the AUDIT policies that matched ("namespace/name"),
	// whatever the decision.
	Audit []string
	// MTLSMode is the effective PeerAuthentication mode for the
	// destination port (never UNSET).
	MTLSMode v1alpha1.MTLSMode
}

// Decision reasons. Stable strings: the access log and metrics use them.
const (
	ReasonStrictNoIdentity = "peer authentication STRICT requires a verified peer identity"
	ReasonDenyPolicy       = "denied by a DENY policy"
	ReasonNoAllowPolicy    = "allowed: no ALLOW policy applies to the workload"
	ReasonAllowPolicy      = "allowed by an ALLOW policy"
	ReasonNoAllowMatch     = "denied: ALLOW policies apply and none matched"
	ReasonBadRequest       = "denied: request names no destination workload namespace"
)

// attrs are the request attributes rules match against, derived once per
// decision.
type attrs struct {
	principal string // trust domain + path, no "spiffe://"; "" if plaintext
	ns, sa    string // from a /ns/<ns>/sa/<sa> principal path; "" otherwise
	srcIP     netip.Addr
	dstIP     netip.Addr
	dstPort   uint16
}

func requestAttrs(req *Request) attrs {
	a := attrs{
		srcIP:   req.Source.IP.Unmap(),
		dstIP:   req.Destination.IP.Unmap(),
		dstPort: req.Destination.Port,
	}
	if req.Secure && !req.Source.Principal.IsZero() {
		id := req.Source.Principal
		// String() is the stored "spiffe://td/path": trimming the scheme
		// allocates nothing.
		a.principal = strings.TrimPrefix(id.String(), "spiffe://")
		a.ns, a.sa = kubernetesIdentity(id.Path())
	}
	return a
}

// kubernetesIdentity reads namespace and service account from a SPIFFE ID
// path of the form /ns/<namespace>/sa/<service-account>; anything else has
// neither (so namespace and service account rules cannot match it).
func kubernetesIdentity(path string) (ns, sa string) {
	rest, ok := strings.CutPrefix(path, "/ns/")
	if !ok {
		return "", ""
	}
	ns, rest, ok = strings.Cut(rest, "/")
	if !ok || ns == "" {
		return "", ""
	}
	sa, ok = strings.CutPrefix(rest, "sa/")
	if !ok || sa == "" || strings.Contains(sa, "/") {
		return "", ""
	}
	return ns, sa
}

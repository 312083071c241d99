package ca

import (
	"net/http"
	"time"
)

// Wire format of the built-in CA (HTTPS, HTTP/2 or HTTP/1.1, TLS 1.3):
//
//	POST /v1/sign
//	Authorization: Bearer <projected ServiceAccount token of the node daemon>
//	Content-Type: application/json
//	{"spiffe_id": "spiffe://cluster.local/ns/shop/sa/web", "csr": "<base64 DER PKCS#10>"}
//
//	200 {"chain": ["<base64 DER leaf>", "<base64 DER intermediate>", ...], "not_after": "<RFC 3339>"}
//	4xx/5xx {"reason": "<Reason>", "message": "<human readable>"}
//
// Refusals that say "try later" (429 rate_limited, source_rate_limited; 503
// overloaded, pod_lookup_failed) carry Retry-After in seconds.
//
// The body is at most MaxRequestBytes, the CSR at most MaxCSRBytes. The
// chain never contains the root: clients verify it against their own trust
// bundle.
const (
	SignPath        = "/v1/sign"
	MaxRequestBytes = 16 << 10
	MaxCSRBytes     = 8 << 10
)

// SignRequest is the body of POST /v1/sign.
type SignRequest struct {
	SpiffeID string `json:"spiffe_id"`
	CSR      []byte `json:"csr"` // DER
}

// SignResponse is the answer to a granted request.
type SignResponse struct {
	Chain    [][]byte  `json:"chain"` // DER, leaf first
	NotAfter time.Time `json:"not_after"`
}

// ErrorResponse is the answer to a denied or failed request.
type ErrorResponse struct {
	Reason  Reason `json:"reason"`
	Message string `json:"message"`
}

// Reason says why a request was denied: a fixed, small set (it is a
// metrics label and the machine-readable part of a denial).
type Reason string

// Denial reasons.
const (
	ReasonMethod              Reason = "method_not_allowed"
	ReasonBadRequest          Reason = "bad_request"
	ReasonTooLarge            Reason = "request_too_large"
	ReasonNoToken             Reason = "missing_token"
	ReasonUnauthenticated     Reason = "unauthenticated"
	ReasonTokenMalformed      Reason = "token_malformed"
	ReasonTokenExpired        Reason = "token_expired"
	ReasonTokenAudience       Reason = "token_wrong_audience"
	ReasonSourceRateLimited   Reason = "source_rate_limited"
	ReasonOverloaded          Reason = "overloaded"
	ReasonWrongServiceAccount Reason = "wrong_service_account"
	ReasonNoNode              Reason = "no_node_binding"
	ReasonRateLimited         Reason = "rate_limited"
	ReasonBadIdentity         Reason = "bad_identity"
	ReasonForeignTrustDomain  Reason = "foreign_trust_domain"
	ReasonNoPodOnNode         Reason = "no_pod_on_node"
	ReasonLookupFailed        Reason = "pod_lookup_failed"
	ReasonCSRTooLarge         Reason = "csr_too_large"
	ReasonCSRMalformed        Reason = "csr_malformed"
	ReasonCSRSignature        Reason = "csr_bad_signature"
	ReasonSANMismatch         Reason = "san_mismatch"
	ReasonExtraSAN            Reason = "extra_san"
	ReasonWeakKey             Reason = "weak_key"
	ReasonCARequested         Reason = "ca_requested"
	ReasonInternal            Reason = "internal"
)

// Reasons lists every Reason (to pre-create metric series).
var Reasons = []Reason{ReasonMethod, ReasonBadRequest, ReasonTooLarge, ReasonNoToken, ReasonUnauthenticated,
	ReasonTokenMalformed, ReasonTokenExpired, ReasonTokenAudience, ReasonSourceRateLimited, ReasonOverloaded,
	ReasonWrongServiceAccount, ReasonNoNode, ReasonRateLimited, ReasonBadIdentity, ReasonForeignTrustDomain,
	ReasonNoPodOnNode, ReasonLookupFailed, ReasonCSRTooLarge, ReasonCSRMalformed, ReasonCSRSignature,
	ReasonSANMismatch, ReasonExtraSAN, ReasonWeakKey, ReasonCARequested, ReasonInternal}

// retryLater reports whether the denial says "not now" rather than "no":
// it is answered with Retry-After.
func (r Reason) retryLater() bool {
	switch r {
	case ReasonRateLimited, ReasonSourceRateLimited, ReasonOverloaded, ReasonLookupFailed:
		return true
	}
	return false
}

// Status is the HTTP status a denial is answered with.
func (r Reason) Status() int {
	switch r {
	case ReasonMethod:
		return http.StatusMethodNotAllowed
	case ReasonTooLarge:
		return http.StatusRequestEntityTooLarge
	case ReasonNoToken, ReasonUnauthenticated, ReasonTokenMalformed, ReasonTokenExpired, ReasonTokenAudience:
		return http.StatusUnauthorized
	case ReasonWrongServiceAccount, ReasonNoNode, ReasonForeignTrustDomain, ReasonNoPodOnNode:
		return http.StatusForbidden
	case ReasonRateLimited, ReasonSourceRateLimited:
		return http.StatusTooManyRequests
	case ReasonLookupFailed, ReasonOverloaded:
		return http.StatusServiceUnavailable
	case ReasonInternal:
		return http.StatusInternalServerError
	default:
		return http.StatusBadRequest
	}
}

package tunnel

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (with
// %w) where a caller may want to branch on the reason.
var (
	// ErrDenied: the server's authorizer refused the connection (HTTP 401).
	ErrDenied = errors.New("tunnel: denied by authorization")
	// ErrBadRequest: the server rejected the CONNECT request (HTTP 400),
	// e.g. an authority that is not served there.
	ErrBadRequest = errors.New("tunnel: bad request")
	// ErrRevoked: an allowed stream was ended because its authorization was
	// withdrawn (Decision.Watch), e.g. by a policy change.
	ErrRevoked = errors.New("tunnel: authorization revoked")
	// ErrUpstream: the server could not reach the destination (HTTP 503).
	ErrUpstream = errors.New("tunnel: destination unreachable")
	// ErrUnexpectedStatus: the server answered with a status HBONE does not
	// define.
	ErrUnexpectedStatus = errors.New("tunnel: unexpected response status")
	// ErrIdentityMismatch: the server's certificate does not carry one of the
	// expected SPIFFE IDs.
	ErrIdentityMismatch = errors.New("tunnel: peer identity not expected")
	// ErrTLS: the TLS handshake failed (bad certificate, protocol, timeout).
	ErrTLS = errors.New("tunnel: TLS handshake failed")
	// ErrStreamReset: the peer reset the stream (RST_STREAM), or the
	// connection carrying it died.
	ErrStreamReset = errors.New("tunnel: stream reset")
	// ErrRefused: the server refused the stream before processing it
	// (REFUSED_STREAM or GOAWAY); it is safe to retry.
	ErrRefused = errors.New("tunnel: stream refused")
	// ErrConnClosed: the HTTP/2 connection is closed.
	ErrConnClosed = errors.New("tunnel: connection closed")
	// ErrKeepalive: the peer did not answer keepalive PINGs in time.
	ErrKeepalive = errors.New("tunnel: keepalive timeout")
	// ErrProtocol: the peer violated HTTP/2 or HBONE.
	ErrProtocol = errors.New("tunnel: protocol error")
	// ErrClosed: the Client or Server was closed or shut down.
	ErrClosed = errors.New("tunnel: closed")
	// ErrConfig: a required configuration field is missing or invalid.
	ErrConfig = errors.New("tunnel: invalid configuration")
)

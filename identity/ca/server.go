package ca

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
)

// Caller is who presented a token, as the Authenticator established it.
type Caller struct {
	Namespace      string // the token's service account namespace
	ServiceAccount string // the token's service account name
	Node           string // node the token is bound to ("" if none)
	Pod            string // pod the token is bound to, for the audit log (optional)
}

// ErrUnauthenticated is wrapped by Authenticators for a token that is not
// valid (expired, wrong audience, forged, revoked).
var ErrUnauthenticated = errors.New("ca: token not authenticated")

// Authenticator turns a bearer token into a Caller. Errors wrapping
// ErrUnauthenticated deny the request; other errors are answered 503.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Caller, error)
}

// PodLocator answers whether a pod of namespace/serviceAccount is scheduled
// on node and not terminated (Pending or Running).
type PodLocator interface {
	HasPod(ctx context.Context, node, namespace, serviceAccount string) (bool, error)
}

// Readier is optionally implemented by an Authenticator or PodLocator that
// needs to warm up (an informer syncing).
type Readier interface{ Ready() error }

// Metrics receives the server's outcomes (cmd wires it to Prometheus).
type Metrics interface {
	Issued(d time.Duration)
	Denied(r Reason)
}

// Config configures a Server.
type Config struct {
	TrustDomain   spiffeid.TrustDomain // required: the only domain signed
	Issuer        *Issuer              // required
	Authenticator Authenticator        // required
	Pods          PodLocator           // required
	// NodeNamespace/NodeServiceAccount is the ambit node daemon's account;
	// tokens of any other account are refused. Required.
	NodeNamespace, NodeServiceAccount string
	// RatePerNode and BurstPerNode shape the per-node token bucket.
	// Optional, defaults 10/s and 100.
	RatePerNode  float64
	BurstPerNode int
	// TokenAudiences: a bearer token's "aud" claim must name one of them,
	// checked before the Authenticator is asked. Required (the same
	// audiences the Authenticator reviews the token for).
	TokenAudiences []string
	// TokenSubject, if set, is the only "sub" claim a token may carry
	// (Kubernetes: system:serviceaccount:<NodeNamespace>:<NodeServiceAccount>),
	// checked before the Authenticator is asked. Optional.
	TokenSubject string
	// Admission bounds the work done before authentication. Optional.
	Admission Admission
	Clock     identity.Clock // optional
	Logger    *slog.Logger   // optional
	Metrics   Metrics        // optional
}

// Server is the built-in CA's HTTP handler. See the package documentation.
type Server struct {
	cfg     Config
	log     *slog.Logger
	limiter *nodeLimiter
	gate    *reviewGate
	logs    *logThrottle

	mu     sync.Mutex
	issued uint64
	denied map[Reason]uint64
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg Config) (*Server, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("ca: TrustDomain required")
	case cfg.Issuer == nil:
		return nil, errors.New("ca: Issuer required")
	case cfg.Authenticator == nil:
		return nil, errors.New("ca: Authenticator required")
	case cfg.Pods == nil:
		return nil, errors.New("ca: Pods required")
	case cfg.NodeNamespace == "" || cfg.NodeServiceAccount == "":
		return nil, errors.New("ca: node service account required")
	case len(cfg.TokenAudiences) == 0:
		return nil, errors.New("ca: TokenAudiences required")
	}
	cfg.Admission = cfg.Admission.withDefaults()
	if cfg.RatePerNode <= 0 {
		cfg.RatePerNode = 10
	}
	if cfg.BurstPerNode <= 0 {
		cfg.BurstPerNode = 100
	}
	if cfg.Clock == nil {
		cfg.Clock = identity.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "ca"),
		limiter: newNodeLimiter(cfg.RatePerNode, cfg.BurstPerNode, cfg.Clock),
		gate: newReviewGate(cfg.Authenticator, cfg.Admission, cfg.Clock, func(c Caller) bool {
			return c.Namespace == cfg.NodeNamespace && c.ServiceAccount == cfg.NodeServiceAccount && c.Node != ""
		}),
		logs:   newLogThrottle(logBurstPerReason, cfg.Clock),
		denied: map[Reason]uint64{},
	}, nil
}

// logBurstPerReason is how many denial lines of one reason are logged per
// second; the rest are counted and summarized.
const logBurstPerReason = 10

// Stats are the server's counters.
type Stats struct {
	Issued    uint64
	Denied    map[Reason]uint64
	Admission AdmissionStats
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Issued: s.issued, Denied: map[Reason]uint64{}}
	for r, n := range s.denied {
		st.Denied[r] = n
	}
	st.Admission = s.gate.stats()
	return st
}

// Handler serves POST /v1/sign.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(SignPath, s.serveSign)
	return mux
}

// HealthHandler serves /healthz (alive) and /readyz (the authenticator and
// pod locator are ready).
func (s *Server) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		var errs []error
		for _, c := range []any{s.cfg.Authenticator, s.cfg.Pods} {
			if r, ok := c.(Readier); ok {
				errs = append(errs, r.Ready())
			}
		}
		if err := errors.Join(errs...); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}

func (s *Server) serveSign(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var caller Caller
	var id spiffeid.ID
	chain, err := s.sign(r, &caller, &id)
	if err != nil {
		reason := ReasonOf(err)
		s.mu.Lock()
		s.denied[reason]++
		s.mu.Unlock()
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.Denied(reason)
		}
		if ok, suppressed := s.logs.allow(reason); ok {
			s.log.Warn("ca: denied", "reason", string(reason), "node", caller.Node, "pod", caller.Pod,
				"caller", caller.Namespace+"/"+caller.ServiceAccount, "id", idString(id), "remote", r.RemoteAddr,
				"suppressed_before", suppressed, "err", err)
		}
		if reason.retryLater() {
			w.Header().Set("Retry-After", "1")
		}
		writeJSON(w, reason.Status(), ErrorResponse{Reason: reason, Message: err.Error()})
		return
	}
	d := time.Since(start)
	s.mu.Lock()
	s.issued++
	s.mu.Unlock()
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Issued(d)
	}
	leaf := chain[0]
	s.log.Info("ca: issued", "id", id.String(), "node", caller.Node, "pod", caller.Pod,
		"serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter, "took", d)
	resp := SignResponse{NotAfter: leaf.NotAfter}
	for _, c := range chain {
		resp.Chain = append(resp.Chain, c.Raw)
	}
	writeJSON(w, http.StatusOK, resp)
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// sign runs every check in order; it fills caller and id as soon as they are
// known so that denials are logged with them.
func (s *Server) sign(r *http.Request, caller *Caller, id *spiffeid.ID) ([]*x509.Certificate, error) {
	if r.Method != http.MethodPost {
		return nil, deny(ReasonMethod, "method %s, want POST", r.Method)
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	token = strings.TrimSpace(token)
	if !ok || token == "" {
		return nil, deny(ReasonNoToken, "no bearer token")
	}
	// Everything before the Authenticator is cheap and local: the token's
	// shape, expiry and audience, then the bounded body.
	exp, err := precheckToken(token, s.cfg.Admission.MaxTokenBytes, s.cfg.TokenAudiences, s.cfg.TokenSubject, s.cfg.Clock.Now())
	if err != nil {
		return nil, err
	}
	req, err := readSignRequest(r)
	if err != nil {
		return nil, err
	}
	if len(req.CSR) > MaxCSRBytes {
		return nil, deny(ReasonCSRTooLarge, "CSR of %d bytes, over %d", len(req.CSR), MaxCSRBytes)
	}
	c, err := s.gate.authenticate(r.Context(), remoteAddr(r), token, exp)
	if err != nil {
		var d *DenyError
		if errors.As(err, &d) {
			return nil, d
		}
		if errors.Is(err, ErrUnauthenticated) {
			return nil, &DenyError{Reason: ReasonUnauthenticated, Err: err}
		}
		return nil, &DenyError{Reason: ReasonLookupFailed, Err: fmt.Errorf("authenticate: %w", err)}
	}
	*caller = c
	if c.Namespace != s.cfg.NodeNamespace || c.ServiceAccount != s.cfg.NodeServiceAccount {
		return nil, deny(ReasonWrongServiceAccount, "service account %s/%s is not the ambit node account %s/%s",
			c.Namespace, c.ServiceAccount, s.cfg.NodeNamespace, s.cfg.NodeServiceAccount)
	}
	if c.Node == "" {
		return nil, deny(ReasonNoNode, "token is not bound to a node or pod")
	}
	if !s.limiter.allow(c.Node) {
		return nil, deny(ReasonRateLimited, "node %s is over its rate limit", c.Node)
	}
	want, err := spiffeid.FromString(req.SpiffeID)
	if err != nil {
		return nil, deny(ReasonBadIdentity, "spiffe_id: %v", err)
	}
	*id = want
	if want.TrustDomain() != s.cfg.TrustDomain {
		return nil, deny(ReasonForeignTrustDomain, "trust domain %s is not %s", want.TrustDomain().Name(), s.cfg.TrustDomain.Name())
	}
	ns, sa, err := identity.ParseWorkload(want)
	if err != nil {
		return nil, &DenyError{Reason: ReasonBadIdentity, Err: err}
	}
	csr, err := CheckCSR(req.CSR, want)
	if err != nil {
		return nil, err
	}
	has, err := s.cfg.Pods.HasPod(r.Context(), c.Node, ns, sa)
	if err != nil {
		return nil, &DenyError{Reason: ReasonLookupFailed, Err: fmt.Errorf("pod lookup: %w", err)}
	}
	if !has {
		return nil, deny(ReasonNoPodOnNode, "no running or pending pod of %s/%s on node %s", ns, sa, c.Node)
	}
	chain, err := s.cfg.Issuer.Issue(csr.PublicKey, want)
	if err != nil {
		return nil, &DenyError{Reason: ReasonInternal, Err: err}
	}
	return chain, nil
}

func readSignRequest(r *http.Request) (SignRequest, error) {
	var req SignRequest
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return req, deny(ReasonTooLarge, "request body over %d bytes", MaxRequestBytes)
		}
		return req, deny(ReasonBadRequest, "read body: %v", err)
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, deny(ReasonBadRequest, "decode request: %v", err)
	}
	return req, nil
}

// remoteAddr is the request's source address (the zero Addr if the server
// set none that parses).
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

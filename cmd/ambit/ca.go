package main

import (
	"context"
	"crypto"
	"crypto/fips140"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/node/kubeca"
)

func init() {
	subcommands["ca"] = subcommand{summary: "run the built-in certificate authority", run: runCA}
}

type caFlags struct {
	listen, healthListen    string
	trustDomain             string
	ttl                     time.Duration
	signingCert, signingKey string
	devRootOut              string
	nodeSA                  string
	audiences               string
	kubeconfig              string
	servingID, servingDNS   string
	ratePerNode             float64
	burstPerNode            int
	maxReviews              int
	reviewWait, reviewTTL   time.Duration
	ratePerSource           float64
	burstPerSource          int
	logLevel                string
	fips                    bool
	shutdownGrace           time.Duration
}

func parseCAFlags(args []string, stdout io.Writer) (*caFlags, error) {
	f := &caFlags{}
	fs := flag.NewFlagSet("ambit ca", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported in one line by the caller
	fs.StringVar(&f.listen, "listen", ":15012", "HTTPS address of the signing API (POST /v1/sign)")
	fs.StringVar(&f.healthListen, "health-listen", ":15014", "plain HTTP address of /healthz, /readyz and /metrics")
	fs.StringVar(&f.trustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain the CA signs for")
	fs.DurationVar(&f.ttl, "ttl", 24*time.Hour, "lifetime of issued workload certificates")
	fs.StringVar(&f.signingCert, "signing-cert", "", "PEM file: intermediate CA certificate first, then its issuers (root optional)")
	fs.StringVar(&f.signingKey, "signing-key", "", "PEM file: the intermediate's private key (PKCS#8, EC or PKCS#1)")
	fs.StringVar(&f.devRootOut, "dev-root-out", "", "without -signing-cert: write the generated development root certificate (not its key) here")
	fs.StringVar(&f.nodeSA, "node-service-account", "ambit-system/ambit", "namespace/name of the ambit node daemon's service account; only it may request certificates")
	fs.StringVar(&f.audiences, "token-audience", "ambit-ca", "comma-separated audiences the node tokens must carry")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (empty: in-cluster configuration)")
	fs.StringVar(&f.servingID, "serving-id", "", "SPIFFE ID of the CA's own serving certificate (default spiffe://<trust-domain>/ns/<node namespace>/sa/ambit-ca)")
	fs.StringVar(&f.servingDNS, "serving-dns", "ambit-ca.ambit-system.svc", "comma-separated DNS names of the serving certificate")
	fs.Float64Var(&f.ratePerNode, "rate-per-node", 10, "sustained signing requests per second per node")
	fs.IntVar(&f.burstPerNode, "burst-per-node", 100, "signing requests a node may burst")
	fs.IntVar(&f.maxReviews, "max-token-reviews", 8, "TokenReviews in flight at once for unauthenticated requests (2 more are reserved for known node tokens)")
	fs.DurationVar(&f.reviewWait, "token-review-wait", 250*time.Millisecond, "how long a request waits for a TokenReview slot before 503 overloaded")
	fs.DurationVar(&f.reviewTTL, "token-review-cache-ttl", 10*time.Second, "how long a TokenReview result is reused for the same token (never past the token's exp)")
	fs.Float64Var(&f.ratePerSource, "rate-per-source", 5, "sustained TokenReviews per second a source address (IPv6: /64) may cause")
	fs.IntVar(&f.burstPerSource, "burst-per-source", 20, "TokenReviews a source address may cause in a burst")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.fips, "fips", false, "serve with the FIPS mode TLS profile (TLS 1.3, AES-GCM, P-256/P-384); needs GODEBUG=fips140=on")
	fs.DurationVar(&f.shutdownGrace, "shutdown-grace", 10*time.Second, "time to finish requests after SIGTERM")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "usage: ambit ca [flags]")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return f, nil
}

// caSetup is everything validated before anything listens.
type caSetup struct {
	td             spiffeid.TrustDomain
	nodeNS, nodeSA string
	audiences      []string
	chain          []*x509.Certificate
	key            crypto.Signer
	dev            bool
	servingID      spiffeid.ID
	dns            []string
	level          slog.Level
	kube           *rest.Config
}

func validateCA(f *caFlags) (*caSetup, error) {
	s := &caSetup{}
	var err error
	if s.td, err = spiffeid.TrustDomainFromString(f.trustDomain); err != nil {
		return nil, fmt.Errorf("-trust-domain %q: %w", f.trustDomain, err)
	}
	if f.ttl < time.Minute || f.ttl > 90*24*time.Hour {
		return nil, fmt.Errorf("-ttl %s: must be between 1m and 2160h", f.ttl)
	}
	var ok bool
	if s.nodeNS, s.nodeSA, ok = strings.Cut(f.nodeSA, "/"); !ok || s.nodeNS == "" || s.nodeSA == "" || strings.Contains(s.nodeSA, "/") {
		return nil, fmt.Errorf("-node-service-account %q: want namespace/name", f.nodeSA)
	}
	for _, a := range strings.Split(f.audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			s.audiences = append(s.audiences, a)
		}
	}
	if len(s.audiences) == 0 {
		return nil, errors.New("-token-audience: at least one audience required")
	}
	for _, addr := range []string{f.listen, f.healthListen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("listen address %q: %w", addr, err)
		}
	}
	if f.ratePerNode <= 0 || f.burstPerNode < 1 {
		return nil, errors.New("-rate-per-node and -burst-per-node must be positive")
	}
	if f.maxReviews < 1 || f.reviewWait <= 0 || f.reviewTTL <= 0 || f.ratePerSource <= 0 || f.burstPerSource < 1 {
		return nil, errors.New("-max-token-reviews, -token-review-wait, -token-review-cache-ttl, -rate-per-source and -burst-per-source must be positive")
	}
	if f.reviewTTL > time.Minute {
		return nil, fmt.Errorf("-token-review-cache-ttl %s: at most 1m (a revoked token stays accepted that long)", f.reviewTTL)
	}
	if f.fips && !fips140.Enabled() {
		return nil, errors.New("-fips: the Go runtime is not in FIPS 140-3 mode (run with GODEBUG=fips140=on, or the /ambit-fips binary)")
	}
	if err := s.level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level %q: %w", f.logLevel, err)
	}
	switch {
	case f.signingCert != "" && f.signingKey != "":
		if s.chain, s.key, err = ca.LoadSigningFiles(f.signingCert, f.signingKey); err != nil {
			return nil, err
		}
	case f.signingCert != "" || f.signingKey != "":
		return nil, errors.New("-signing-cert and -signing-key go together")
	default:
		s.dev = true
		root, key, err := ca.NewDevRoot(s.td, time.Now())
		if err != nil {
			return nil, fmt.Errorf("generate development root: %w", err)
		}
		s.chain, s.key = []*x509.Certificate{root}, key
		if f.devRootOut != "" {
			if err := os.WriteFile(f.devRootOut, identity.EncodePEMCertificates(s.chain), 0o644); err != nil {
				return nil, fmt.Errorf("-dev-root-out: %w", err)
			}
		}
	}
	if f.servingID == "" {
		s.servingID, err = identity.Workload(s.td, s.nodeNS, "ambit-ca")
	} else {
		s.servingID, err = spiffeid.FromString(f.servingID)
	}
	if err != nil {
		return nil, fmt.Errorf("-serving-id: %w", err)
	}
	if s.servingID.TrustDomain() != s.td {
		return nil, fmt.Errorf("-serving-id %s is not in trust domain %s", s.servingID, s.td)
	}
	for _, d := range strings.Split(f.servingDNS, ",") {
		if d = strings.TrimSpace(d); d != "" {
			s.dns = append(s.dns, d)
		}
	}
	if f.kubeconfig != "" {
		s.kube, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	} else {
		s.kube, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	return s, nil
}

func runCA(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, err := parseCAFlags(args, stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "ambit ca: %v\n", err)
		return 2
	}
	s, err := validateCA(f)
	if err != nil {
		fmt.Fprintf(stderr, "ambit ca: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: s.level}))
	if err := serveCA(ctx, f, s, log); err != nil {
		log.Error("ambit ca stopped", "err", err)
		return 1
	}
	return 0
}

func serveCA(ctx context.Context, f *caFlags, s *caSetup, log *slog.Logger) error {
	issuer, err := ca.NewIssuer(ca.IssuerConfig{Chain: s.chain, Key: s.key, TTL: f.ttl})
	if err != nil {
		return err
	}
	if s.dev {
		log.Warn("!!! DEVELOPMENT CA: no -signing-cert/-signing-key given, signing with a self-generated root that dies with this process; never rely on it in production, use an intermediate from your PKI !!!")
	} else if len(issuer.Roots()) > 0 && issuer.SigningCert().Equal(issuer.Roots()[0]) {
		log.Warn("!!! signing directly with a self-signed root: use an intermediate from your PKI in production !!!")
	}
	client, err := kubernetes.NewForConfig(s.kube)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	auth, err := kubeca.NewAuthenticator(kubeca.AuthenticatorConfig{Client: client, Audiences: s.audiences})
	if err != nil {
		return err
	}
	pods, err := kubeca.NewPodLocator(kubeca.PodLocatorConfig{Client: client, Logger: log})
	if err != nil {
		return err
	}
	pods.Start(ctx)
	reg := prometheus.NewRegistry()
	metrics := newCAMetrics(reg)
	srv, err := ca.NewServer(ca.Config{
		TrustDomain: s.td, Issuer: issuer, Authenticator: auth, Pods: pods,
		NodeNamespace: s.nodeNS, NodeServiceAccount: s.nodeSA,
		RatePerNode: f.ratePerNode, BurstPerNode: f.burstPerNode,
		TokenAudiences: s.audiences,
		TokenSubject:   "system:serviceaccount:" + s.nodeNS + ":" + s.nodeSA,
		Admission: ca.Admission{MaxReviewsInFlight: f.maxReviews, ReviewWait: f.reviewWait, CacheTTL: f.reviewTTL,
			RatePerSource: f.ratePerSource, BurstPerSource: f.burstPerSource},
		Logger: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	registerAdmissionMetrics(reg, srv)
	health := http.NewServeMux()
	health.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	health.Handle("/", srv.HealthHandler())
	api := &http.Server{
		Addr: f.listen, Handler: srv.Handler(),
		TLSConfig:         servingTLS(f.fips, ca.ServingTLS(issuer, s.servingID, s.dns, 24*time.Hour, nil), metrics, log),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	hs := &http.Server{Addr: f.healthListen, Handler: health, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- api.ListenAndServeTLS("", "") }()
	go func() { errc <- hs.ListenAndServe() }()
	log.Info("ambit ca serving", "listen", f.listen, "health", f.healthListen, "trust_domain", s.td.Name(),
		"serving_id", s.servingID.String(), "signing_subject", issuer.SigningCert().Subject.String(),
		"signing_not_after", issuer.SigningCert().NotAfter, "ttl", f.ttl,
		"fips", f.fips, "fips140_enabled", fips140.Enabled(), "fips140_enforced", fips140.Enforced(), "fips140_module", fips140.Version())
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("ambit ca shutting down")
	case runErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownGrace)
	defer cancel()
	return errors.Join(runErr, api.Shutdown(sctx), hs.Shutdown(sctx))
}

// servingTLS applies the FIPS mode profile to the CA's TLS configuration
// when asked; a client offering nothing the profile allows is refused in
// the handshake, counted (ambit_ca_denied_total{reason="tls_algorithms"})
// and logged.
func servingTLS(fips bool, c *tls.Config, m *caMetrics, log *slog.Logger) *tls.Config {
	if !fips {
		return c
	}
	identity.RestrictTLSToFIPS(c)
	check := c.GetConfigForClient
	c.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		conf, err := check(h)
		if err != nil {
			m.denied.WithLabelValues(reasonTLSAlgorithms).Inc()
			log.Warn("ca: TLS handshake refused: the client offers no algorithm the FIPS mode profile allows",
				"peer", h.Conn.RemoteAddr().String(), "err", err.Error())
		}
		return conf, err
	}
	return c
}

// reasonTLSAlgorithms labels handshakes refused by the FIPS mode profile.
const reasonTLSAlgorithms = "tls_algorithms"

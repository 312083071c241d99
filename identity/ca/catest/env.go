package catest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/identity/identitytest"
)

// Node service account the Env's CA accepts.
const (
	NodeNamespace      = "ambit-system"
	NodeServiceAccount = "ambit"
)

// Options shape an Env.
type Options struct {
	TrustDomain string        // optional, default cluster.local
	Dir         string        // required: where the token file is written
	TTL         time.Duration // optional, default 24h
	Logger      *slog.Logger  // optional
	Mutate      func(*ca.Config)
	FIPS        bool // serve and connect with the FIPS mode TLS profile
}

// Env is a running in-process CA over real HTTPS on 127.0.0.1.
type Env struct {
	Root         *identitytest.CA
	Intermediate *identitytest.Intermediate
	Issuer       *ca.Issuer
	Server       *ca.Server
	Auth         *Authenticator
	Pods         *Pods
	Bundle       *identity.BundleStore
	ServerID     spiffeid.ID
	URL          string
	TokenFile    string // holds a token of the node account bound to node "node-a"

	srv       *http.Server
	addr      string
	tlsConfig *tls.Config
	fips      bool
	logger    *slog.Logger
}

// Start runs a CA. Close stops it.
func Start(o Options) (*Env, error) {
	if o.Dir == "" {
		return nil, errors.New("catest: Dir required")
	}
	if o.TrustDomain == "" {
		o.TrustDomain = "cluster.local"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return nil, err
	}
	root, err := identitytest.NewCA(td)
	if err != nil {
		return nil, err
	}
	inter, err := root.NewIntermediate()
	if err != nil {
		return nil, err
	}
	is, err := ca.NewIssuer(ca.IssuerConfig{Chain: []*x509.Certificate{inter.Cert, root.Cert}, Key: inter.Key, TTL: o.TTL})
	if err != nil {
		return nil, err
	}
	env := &Env{Root: root, Intermediate: inter, Issuer: is, Auth: &Authenticator{}, Pods: &Pods{}}
	env.Auth.Set(NodeAToken, ca.Caller{Namespace: NodeNamespace, ServiceAccount: NodeServiceAccount, Node: "node-a", Pod: "ambit-a"})
	env.TokenFile = filepath.Join(o.Dir, "token")
	if err := os.WriteFile(env.TokenFile, []byte(NodeAToken+"\n"), 0o600); err != nil {
		return nil, err
	}
	env.Bundle, err = identity.NewBundleStore(identity.BundleConfig{TrustDomain: td, Roots: []*x509.Certificate{root.Cert}})
	if err != nil {
		return nil, err
	}
	cfg := ca.Config{TrustDomain: td, Issuer: is, Authenticator: env.Auth, Pods: env.Pods,
		NodeNamespace: NodeNamespace, NodeServiceAccount: NodeServiceAccount, TokenAudiences: []string{Audience},
		Logger: o.Logger}
	if o.Mutate != nil {
		o.Mutate(&cfg)
	}
	env.Server, err = ca.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	env.ServerID, err = identity.Workload(td, NodeNamespace, "ambit-ca")
	if err != nil {
		return nil, err
	}
	env.tlsConfig = ca.ServingTLS(is, env.ServerID, []string{"localhost"}, time.Hour, nil)
	if o.FIPS {
		identity.RestrictTLSToFIPS(env.tlsConfig)
	}
	env.fips = o.FIPS
	env.logger = o.Logger
	if err := env.serve("127.0.0.1:0"); err != nil {
		return nil, err
	}
	env.URL = fmt.Sprintf("https://%s", env.addr)
	return env, nil
}

func (e *Env) serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	e.addr = ln.Addr().String()
	e.srv = &http.Server{
		Handler:           e.Server.Handler(),
		TLSConfig:         e.tlsConfig,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.logger.Handler(), slog.LevelDebug),
	}
	srv := e.srv
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	return nil
}

// Stop takes the CA down (connections refused) until Restart.
func (e *Env) Stop() error { return e.srv.Close() }

// Restart brings a stopped CA back on the same address.
func (e *Env) Restart() error { return e.serve(e.addr) }

// Client returns a CA client that uses the Env's token file and bundle.
func (e *Env) Client() (*ca.Client, error) {
	return ca.NewClient(ca.ClientConfig{URL: e.URL, TokenFile: e.TokenFile, Bundle: e.Bundle, ServerID: e.ServerID, FIPS: e.fips})
}

// Close stops the server.
func (e *Env) Close() error { return e.srv.Close() }

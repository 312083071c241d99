package ca

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/ambit-mesh/ambit/identity"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// URL of the CA, e.g. https://ambit-ca.ambit-system.svc:15012. Required.
	URL string
	// TokenFile is the projected ServiceAccount token, read again on every
	// request because the kubelet rotates it. Required.
	TokenFile string
	// Bundle verifies the CA's serving certificate (chain to the trust
	// bundle, URI SAN ServerID). Required unless RootCAs is set.
	Bundle x509bundle.Source
	// ServerID is the CA's serving identity. Required with Bundle.
	ServerID spiffeid.ID
	// RootCAs verifies the CA's serving certificate the web-PKI way (DNS
	// name of URL) instead of Bundle/ServerID, for a CA fronted by a
	// certificate from elsewhere. Optional.
	RootCAs *x509.CertPool
	// Timeout bounds one request when ctx has no deadline. Optional, 10s.
	Timeout time.Duration
	// FIPS restricts the connection to the FIPS mode profile
	// (identity.RestrictTLSToFIPS). Optional.
	FIPS bool
}

// Client is the node daemon's side of the built-in CA: an identity.Signer
// over HTTPS with TLS 1.3.
type Client struct {
	cfg  ClientConfig
	http *http.Client
}

var _ identity.Signer = (*Client)(nil)

// RemoteError is a denial or failure answered by the CA.
type RemoteError struct {
	Status  int
	Reason  Reason
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("ca: %d %s: %s", e.Status, e.Reason, e.Message)
}

// NewClient checks cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("ca client: URL %q must be https://", cfg.URL)
	}
	if cfg.TokenFile == "" {
		return nil, errors.New("ca client: TokenFile required")
	}
	var tc *tls.Config
	switch {
	case cfg.RootCAs != nil:
		tc = &tls.Config{RootCAs: cfg.RootCAs}
	case cfg.Bundle != nil && !cfg.ServerID.IsZero():
		tc = tlsconfig.TLSClientConfig(cfg.Bundle, tlsconfig.AuthorizeID(cfg.ServerID))
	default:
		return nil, errors.New("ca client: Bundle and ServerID (or RootCAs) required")
	}
	tc.MinVersion = tls.VersionTLS13
	if cfg.FIPS {
		identity.RestrictTLSToFIPS(tc)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	tr := &http.Transport{
		TLSClientConfig:     tc,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: cfg.Timeout,
	}
	return &Client{cfg: cfg, http: &http.Client{Transport: tr}}, nil
}

// Close drops idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Sign implements identity.Signer.
func (c *Client) Sign(ctx context.Context, csrDER []byte, id spiffeid.ID) ([]*x509.Certificate, error) {
	token, err := os.ReadFile(c.cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("ca client: read token: %w", err)
	}
	tok := strings.TrimSpace(string(token))
	if tok == "" {
		return nil, fmt.Errorf("ca client: token file %s is empty", c.cfg.TokenFile)
	}
	body, err := json.Marshal(SignRequest{SpiffeID: id.String(), CSR: csrDER})
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.cfg.URL, "/")+SignPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ca client: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("ca client: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var er ErrorResponse
		_ = json.Unmarshal(data, &er)
		if er.Reason == "" {
			er.Reason = ReasonInternal
			er.Message = strings.TrimSpace(string(data))
		}
		return nil, &RemoteError{Status: resp.StatusCode, Reason: er.Reason, Message: er.Message}
	}
	var sr SignResponse
	if err := json.Unmarshal(data, &sr); err != nil {
		return nil, fmt.Errorf("ca client: decode response: %w", err)
	}
	chain := make([]*x509.Certificate, 0, len(sr.Chain))
	for _, der := range sr.Chain {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("ca client: response certificate: %w", err)
		}
		chain = append(chain, cert)
	}
	if len(chain) == 0 {
		return nil, errors.New("ca client: empty chain in response")
	}
	return chain, nil
}

package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/identity"
)

// alpnH2 is the only application protocol HBONE speaks.
const alpnH2 = "h2"

// TLS 1.2 suites allowed when Settings.AllowTLS12 is set: ECDHE with
// AES-GCM only. TLS 1.3 suites are not configurable in crypto/tls; both
// ends instead check the negotiated suite in VerifyConnection and abort a
// handshake that landed on anything but AES-GCM (Go prefers AES-GCM when
// the CPU has AES instructions and the peer offers it; a peer offering only
// ChaCha20 is refused).
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

func allowedSuite(id uint16) bool {
	switch id {
	case tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384:
		return true
	}
	for _, s := range tls12Suites {
		if s == id {
			return true
		}
	}
	return false
}

// errWeakSession is returned from VerifyConnection for a session outside
// HBONE's profile.
var errWeakSession = errors.New("session outside the HBONE TLS profile")

func verifyConnection(cs tls.ConnectionState) error {
	if !allowedSuite(cs.CipherSuite) {
		return fmt.Errorf("%w: cipher suite %s", errWeakSession, tls.CipherSuiteName(cs.CipherSuite))
	}
	if cs.NegotiatedProtocol != alpnH2 {
		return fmt.Errorf("%w: ALPN %q, want h2", errWeakSession, cs.NegotiatedProtocol)
	}
	if cs.DidResume {
		return fmt.Errorf("%w: resumed session", errWeakSession)
	}
	return nil
}

func baseTLS(s Settings) *tls.Config {
	c := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		NextProtos:             []string{alpnH2},
		SessionTicketsDisabled: true,
		VerifyConnection:       verifyConnection,
		CurvePreferences:       []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384},
	}
	if s.AllowTLS12 {
		c.MinVersion = tls.VersionTLS12
		c.CipherSuites = tls12Suites
	}
	if s.FIPS {
		identity.RestrictTLSToFIPS(c)
	}
	return c
}

// algorithmRefusal reports whether a failed server handshake failed because
// the client offers nothing this endpoint's profile allows (no common
// version, suite or key exchange group, or a negotiated session or peer
// certificate outside the profile), as opposed to a bad certificate, a
// timeout or garbage. crypto/tls has no typed errors for these; its
// messages are stable and tested here (TestFIPSRefusals).
func algorithmRefusal(err error) bool {
	if errors.Is(err, errWeakSession) || errors.Is(err, identity.ErrNotApproved) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{
		"tls: no cipher suite supported by both client and server",
		"tls: no key exchanges supported by both client and server",
		"tls: no ECDHE curve supported by both client and server",
		"tls: client offered only unsupported versions",
		"tls: peer doesn't support any of the certificate's signature algorithms",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// serverTLS builds the TLS configuration of one HBONE listener: it presents
// the destination workload's certificate (asked from the source on every
// handshake, so rotation needs no restart) and accepts any client whose
// SPIFFE ID is in a trust domain Bundles has a bundle for.
func serverTLS(svids identity.SVIDSource, bundles x509bundle.Source, w spiffeid.ID, s Settings) *tls.Config {
	c := baseTLS(s)
	c.ClientAuth = tls.RequireAnyClientCert
	c.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		svid, err := svids.GetX509SVIDFor(hello.Context(), w)
		if err != nil {
			return nil, fmt.Errorf("certificate of %s: %w", w, err)
		}
		return tlsCert(svid)
	}
	// x509svid.ParseAndVerify (inside VerifyPeerCertificate) already fails
	// for a trust domain without a bundle; the authorizer states it again so
	// the rule does not depend on that detail.
	c.VerifyPeerCertificate = tlsconfig.VerifyPeerCertificate(bundles, func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if _, err := bundles.GetX509BundleForTrustDomain(id.TrustDomain()); err != nil {
			return fmt.Errorf("client %s: trust domain not trusted: %w", id, err)
		}
		return nil
	})
	return c
}

// clientTLS builds the TLS configuration of tunnels from source to a
// server that must present one of expected. No SNI is sent (ServerName is
// empty; go-spiffe's verification replaces host name checks), no session
// cache is kept.
func clientTLS(svids identity.SVIDSource, bundles x509bundle.Source, source spiffeid.ID, expected []spiffeid.ID, s Settings) *tls.Config {
	c := baseTLS(s)
	c.InsecureSkipVerify = true // verification is VerifyPeerCertificate below
	c.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		svid, err := svids.GetX509SVIDFor(cri.Context(), source)
		if err != nil {
			return nil, fmt.Errorf("certificate of %s: %w", source, err)
		}
		return tlsCert(svid)
	}
	allowed := tlsconfig.AuthorizeOneOf(expected...)
	c.VerifyPeerCertificate = tlsconfig.VerifyPeerCertificate(bundles, func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if err := allowed(id, chains); err != nil {
			return fmt.Errorf("%w: server presented %s: %v", ErrIdentityMismatch, id, err)
		}
		return nil
	})
	return c
}

func tlsCert(svid *x509svid.SVID) (*tls.Certificate, error) {
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return nil, fmt.Errorf("%w: empty SVID", identity.ErrNoCertificate)
	}
	c := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, cert := range svid.Certificates {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c, nil
}

// peerID returns the SPIFFE ID of a verified peer.
func peerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: no peer certificate", ErrTLS)
	}
	return x509svid.IDFromCert(cs.PeerCertificates[0])
}

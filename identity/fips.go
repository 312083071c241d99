package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// FIPS mode TLS profile: what ambit's TLS endpoints (HBONE tunnel, CA
// client and server) accept when run in FIPS mode. It is narrower than
// what Go's crypto/tls allows with GODEBUG=fips140=on: TLS 1.3 only,
// AES-GCM suites only, key exchange on P-256 or P-384 alone (no X25519,
// no ML-KEM hybrids), peer certificates with approved keys. The Go runtime
// in FIPS 140-3 mode is still what makes the cryptography the module's;
// this profile only decides which of its algorithms a handshake may use.
// docs/fips.md says what that does and does not guarantee.

// ErrNotApproved is returned (wrapped) when a TLS session or a peer
// certificate uses an algorithm outside the FIPS mode profile.
var ErrNotApproved = errors.New("algorithm not approved in FIPS mode")

// FIPSCurves are the key exchange groups of the FIPS mode profile, in
// preference order.
var FIPSCurves = []tls.CurveID{tls.CurveP256, tls.CurveP384}

// FIPSSuites are the TLS 1.3 cipher suites of the FIPS mode profile.
var FIPSSuites = []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384}

// RestrictTLSToFIPS narrows c to the FIPS mode profile: TLS 1.3 only, the
// FIPSCurves; as a server it refuses a ClientHello that offers no version,
// suite or group of the profile (CheckFIPSHello, before anything is
// negotiated, with an error naming what was offered); either side aborts a
// handshake whose negotiated suite, group or peer certificates are outside
// the profile (VerifyConnection, after c's own). crypto/tls offers no
// setting for TLS 1.3 suites, hence the checks; in the FIPS 140-3 runtime Go
// never negotiates anything but AES-GCM anyway. It returns c.
func RestrictTLSToFIPS(c *tls.Config) *tls.Config {
	c.MinVersion, c.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	c.CipherSuites = nil // TLS 1.2 only; unused
	c.CurvePreferences = slices.Clone(FIPSCurves)
	prevHello := c.GetConfigForClient
	c.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if err := CheckFIPSHello(h); err != nil {
			return nil, err
		}
		if prevHello != nil {
			return prevHello(h)
		}
		return nil, nil
	}
	prev := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		return CheckFIPSSession(cs)
	}
	return c
}

// CheckFIPSHello checks that a ClientHello offers at least one version,
// suite and key exchange group of the FIPS mode profile; the error names
// what was offered.
func CheckFIPSHello(h *tls.ClientHelloInfo) error {
	if !slices.Contains(h.SupportedVersions, tls.VersionTLS13) {
		return fmt.Errorf("%w: the client offers no TLS 1.3 (versions %s)", ErrNotApproved, names(h.SupportedVersions, tls.VersionName))
	}
	if !slices.ContainsFunc(h.CipherSuites, func(s uint16) bool { return slices.Contains(FIPSSuites, s) }) {
		return fmt.Errorf("%w: the client offers cipher suites %s, none of %s", ErrNotApproved,
			names(h.CipherSuites, tls.CipherSuiteName), names(FIPSSuites, tls.CipherSuiteName))
	}
	if !slices.ContainsFunc(h.SupportedCurves, func(g tls.CurveID) bool { return slices.Contains(FIPSCurves, g) }) {
		return fmt.Errorf("%w: the client offers key exchange groups %s, none of %s", ErrNotApproved,
			names(h.SupportedCurves, tls.CurveID.String), names(FIPSCurves, tls.CurveID.String))
	}
	return nil
}

func names[T any](vs []T, name func(T) string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = name(v)
	}
	return "[" + strings.Join(out, " ") + "]"
}

// CheckFIPSSession checks a negotiated session against the FIPS mode
// profile: version, suite, key exchange group and the peer's certificates.
func CheckFIPSSession(cs tls.ConnectionState) error {
	if cs.Version != tls.VersionTLS13 {
		return fmt.Errorf("%w: TLS version %s", ErrNotApproved, tls.VersionName(cs.Version))
	}
	if !slices.Contains(FIPSSuites, cs.CipherSuite) {
		return fmt.Errorf("%w: cipher suite %s", ErrNotApproved, tls.CipherSuiteName(cs.CipherSuite))
	}
	if !slices.Contains(FIPSCurves, cs.CurveID) {
		return fmt.Errorf("%w: key exchange %s", ErrNotApproved, cs.CurveID)
	}
	return CheckFIPSCertificates(cs.PeerCertificates)
}

// CheckFIPSCertificates checks that every certificate carries an approved
// public key: ECDSA on P-256 or P-384, or RSA of at least 2048 bits.
func CheckFIPSCertificates(certs []*x509.Certificate) error {
	for _, c := range certs {
		if err := approvedKey(c.PublicKey); err != nil {
			return fmt.Errorf("%w: certificate %q: %v", ErrNotApproved, c.Subject.String(), err)
		}
	}
	return nil
}

func approvedKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("ECDSA key on %s", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return nil
		}
		return fmt.Errorf("RSA key of %d bits", k.N.BitLen())
	case ed25519.PublicKey:
		return errors.New("Ed25519 key")
	default:
		return fmt.Errorf("%T key", pub)
	}
}

package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DenyError is a refusal with its Reason. Every error the server's checks
// return is one.
type DenyError struct {
	Reason Reason
	Err    error
}

func (e *DenyError) Error() string { return fmt.Sprintf("%s: %v", e.Reason, e.Err) }
func (e *DenyError) Unwrap() error { return e.Err }

func deny(r Reason, format string, args ...any) *DenyError {
	return &DenyError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// ReasonOf extracts the Reason of err (ReasonInternal if it has none).
func ReasonOf(err error) Reason {
	var d *DenyError
	if errors.As(err, &d) {
		return d.Reason
	}
	return ReasonInternal
}

var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// MinRSABits is the smallest RSA key the CA signs.
const MinRSABits = 2048

// CheckCSR parses an untrusted DER certificate request and enforces the
// CA's rules: at most MaxCSRBytes; a valid self-signature; exactly one URI
// SAN and it equals want; no DNS, IP or e-mail SANs; an ECDSA P-256 or
// RSA >= 2048 key (checked before the signature, so a weak key is named as such); no request to be a CA. The subject is ignored (never
// copied into the certificate).
func CheckCSR(der []byte, want spiffeid.ID) (*x509.CertificateRequest, error) {
	if len(der) > MaxCSRBytes {
		return nil, deny(ReasonCSRTooLarge, "CSR is %d bytes, limit %d", len(der), MaxCSRBytes)
	}
	if len(der) == 0 {
		return nil, deny(ReasonCSRMalformed, "empty CSR")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, deny(ReasonCSRMalformed, "parse CSR: %v", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, deny(ReasonWeakKey, "ECDSA curve %s not allowed, want P-256", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return nil, deny(ReasonWeakKey, "RSA key of %d bits, want >= %d", k.N.BitLen(), MinRSABits)
		}
	default:
		return nil, deny(ReasonWeakKey, "key type %T not allowed, want ECDSA P-256 or RSA", csr.PublicKey)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, deny(ReasonCSRSignature, "CSR signature: %v", err)
	}
	if n := len(csr.DNSNames) + len(csr.IPAddresses) + len(csr.EmailAddresses); n > 0 {
		return nil, deny(ReasonExtraSAN, "CSR carries %d DNS/IP/e-mail SANs; only the SPIFFE ID is allowed", n)
	}
	if len(csr.URIs) != 1 {
		return nil, deny(ReasonExtraSAN, "CSR carries %d URI SANs, want exactly 1", len(csr.URIs))
	}
	got, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, deny(ReasonSANMismatch, "CSR URI SAN is not a SPIFFE ID: %v", err)
	}
	if got != want {
		return nil, deny(ReasonSANMismatch, "CSR is for %s, request is for %s", got, want)
	}
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(oidBasicConstraints) {
			continue
		}
		var bc struct {
			IsCA       bool `asn1:"optional"`
			MaxPathLen int  `asn1:"optional,default:-1"`
		}
		if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil {
			return nil, deny(ReasonCSRMalformed, "CSR basic constraints: %v", err)
		}
		if bc.IsCA {
			return nil, deny(ReasonCARequested, "CSR asks for a CA certificate")
		}
	}
	return csr, nil
}

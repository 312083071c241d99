package ca

import (
	"crypto/tls"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
)

// ServingTLS returns the CA's TLS 1.3 server configuration. Its certificate
// is minted by the issuer itself for id (plus dnsNames), lives ttl, and is
// re-minted on the first handshake past half its life, so the CA needs no
// separate serving certificate and clients verify it with the same trust
// bundle (and root rotation) as every workload certificate.
func ServingTLS(is *Issuer, id spiffeid.ID, dnsNames []string, ttl time.Duration, clock identity.Clock) *tls.Config {
	if clock == nil {
		clock = identity.RealClock{}
	}
	sc := &servingCert{is: is, id: id, dns: dnsNames, ttl: ttl, clock: clock}
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: sc.get,
	}
}

type servingCert struct {
	is    *Issuer
	id    spiffeid.ID
	dns   []string
	ttl   time.Duration
	clock identity.Clock

	mu      sync.Mutex
	cur     *tls.Certificate
	renewAt time.Time
}

func (s *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if s.cur != nil && now.Before(s.renewAt) {
		return s.cur, nil
	}
	c, err := s.is.ServingCertificate(s.id, s.dns, s.ttl)
	if err != nil {
		if s.cur != nil && now.Before(s.cur.Leaf.NotAfter) {
			return s.cur, nil
		}
		return nil, err
	}
	s.cur = c
	s.renewAt = c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 2)
	return c, nil
}

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/identity/ca/catest"
)

// floodSigns is how many certificates node A obtains during floodCA.
const floodSigns = 10

// timedAuth counts the CA's calls to the real TokenReview authenticator,
// their peak concurrency and their latency.
type timedAuth struct {
	next      ca.Authenticator
	calls, in atomic.Int64
	peak      atomic.Int64
	mu        sync.Mutex
	took      []time.Duration
}

func (a *timedAuth) Authenticate(ctx context.Context, token string) (ca.Caller, error) {
	a.calls.Add(1)
	n := a.in.Add(1)
	defer a.in.Add(-1)
	for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
	}
	t0 := time.Now()
	c, err := a.next.Authenticate(ctx, token)
	a.mu.Lock()
	a.took = append(a.took, time.Since(t0))
	a.mu.Unlock()
	return c, err
}

func (a *timedAuth) percentile(p float64) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.took) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), a.took...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1))]
}

// floodCA: 32 goroutines from 4 loopback source addresses post requests with
// node A's real claims under random signatures (each passes every
// pre-check and would be a TokenReview the API server refuses) while node A
// obtains floodSigns certificates. Node A is served every time; the reviews
// the API server sees stay within the CA's default caps. It returns the
// flood's unauthenticated denials.
func floodCA(ctx context.Context, t *testing.T, env *catest.Env, reviews *timedAuth, tokA string, id spiffeid.ID) uint64 {
	t.Helper()
	if err := os.WriteFile(env.TokenFile, []byte(tokA), 0o600); err != nil {
		t.Fatal(err)
	}
	before := env.Server.Stats()
	calls0 := reviews.calls.Load()
	parts := strings.Split(tokA, ".")
	body, _ := json.Marshal(ca.SignRequest{SpiffeID: id.String(), CSR: []byte{0x30}})
	fctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var sent atomic.Int64
	start := time.Now()
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tc := tlsconfig.TLSClientConfig(env.Bundle, tlsconfig.AuthorizeID(env.ServerID))
			tc.MinVersion = tls.VersionTLS13
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+w%4))}}
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DialContext: d.DialContext, ForceAttemptHTTP2: true}}
			defer hc.CloseIdleConnections()
			sig := make([]byte, 256)
			for fctx.Err() == nil {
				rand.Read(sig)
				req, _ := http.NewRequestWithContext(fctx, http.MethodPost, env.URL+ca.SignPath, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(sig))
				if resp, err := hc.Do(req); err == nil {
					resp.Body.Close()
					sent.Add(1)
				}
			}
		}()
	}
	client, err := env.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	time.Sleep(300 * time.Millisecond)
	var worst time.Duration
	for i := range floodSigns {
		t0 := time.Now()
		svid, err := (identity.CSRProvider{Signer: client}).FetchSVID(ctx, id)
		if err != nil {
			t.Fatalf("node A's request %d during the flood: %v", i, err)
		}
		if err := identity.CheckSVID(svid, id, env.Bundle, time.Now()); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(t0))
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	wg.Wait()
	elapsed := time.Since(start)
	after := env.Server.Stats()
	n := reviews.calls.Load() - calls0
	// Defaults: 4 sources x (burst 20 + 5/s), plus node A's own reviews.
	bound := int64(4*(20+5*elapsed.Seconds())) + floodSigns
	t.Logf("flood against the real API server: %.1fs, %d requests, %d TokenReviews (bound %d), peak %d in flight, review p50 %s p99 %s, node A's worst sign %s, refused %d source_rate_limited %d overloaded",
		elapsed.Seconds(), sent.Load(), n, bound, reviews.peak.Load(), reviews.percentile(0.5), reviews.percentile(0.99), worst,
		after.Denied[ca.ReasonSourceRateLimited]-before.Denied[ca.ReasonSourceRateLimited], after.Denied[ca.ReasonOverloaded]-before.Denied[ca.ReasonOverloaded])
	if n > bound {
		t.Errorf("%d TokenReviews during the flood, over %d", n, bound)
	}
	if p := reviews.peak.Load(); p > 8+2 {
		t.Errorf("%d TokenReviews in flight, over the default cap 8+2", p)
	}
	if worst > 5*time.Second {
		t.Errorf("node A waited %s for a certificate during the flood", worst)
	}
	if after.Denied[ca.ReasonSourceRateLimited] == before.Denied[ca.ReasonSourceRateLimited] {
		t.Errorf("the flood was never limited per source: %v", after.Denied)
	}
	return after.Denied[ca.ReasonUnauthenticated] - before.Denied[ca.ReasonUnauthenticated]
}

package ca_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/identity/ca/catest"
)

// slowAuth stands in for TokenReview: every call takes delay, and calls are
// counted with their peak concurrency.
type slowAuth struct {
	next              ca.Authenticator
	delay             time.Duration
	calls, in, peakIn atomic.Int64
}

func (a *slowAuth) Authenticate(ctx context.Context, token string) (ca.Caller, error) {
	a.calls.Add(1)
	n := a.in.Add(1)
	defer a.in.Add(-1)
	for p := a.peakIn.Load(); n > p && !a.peakIn.CompareAndSwap(p, n); p = a.peakIn.Load() {
	}
	select {
	case <-time.After(a.delay):
	case <-ctx.Done():
		return ca.Caller{}, ctx.Err()
	}
	return a.next.Authenticate(ctx, token)
}

// flooder posts sign requests over HTTPS with keep-alive from local address
// 127.0.0.<host>, as a hostile client would.
func flooder(t *testing.T, env *catest.Env, host int) *http.Client {
	tc := tlsconfig.TLSClientConfig(env.Bundle, tlsconfig.AuthorizeID(env.ServerID))
	tc.MinVersion = tls.VersionTLS13
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(host))}}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DialContext: d.DialContext, ForceAttemptHTTP2: true}}
}

func post(ctx context.Context, hc *http.Client, env *catest.Env, token string, body []byte) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, env.URL+ca.SignPath, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var er ca.ErrorResponse
	_ = json.NewDecoder(resp.Body).Decode(&er)
	if (resp.StatusCode == 429 || resp.StatusCode == 503) && resp.Header.Get("Retry-After") == "" {
		return resp.StatusCode, fmt.Errorf("%d %s without Retry-After", resp.StatusCode, er.Reason)
	}
	return resp.StatusCode, nil
}

// TestFloodOfBadTokens: 32 goroutines from 4 source addresses post
// requests carrying distinct, well-formed but invalid tokens (each would be
// a TokenReview) while a node signs 10 certificates one after the other. The
// node gets every certificate, each within a bounded time; the reviews in
// flight never exceed the cap (shared + reserved); the reviews issued stay
// within what the per-source buckets allow; refusals carry Retry-After and
// are counted; the log holds a bounded number of denial lines.
func TestFloodOfBadTokens(t *testing.T) {
	const (
		sources   = 4
		workers   = 32
		maxFlight = 4
		reserved  = 2
		rate      = 5.0
		burst     = 10
		review    = 5 * time.Millisecond
	)
	auth := &slowAuth{delay: review}
	env, logs := startEnv(t, func(c *ca.Config) {
		auth.next = c.Authenticator
		c.Authenticator = auth
		c.RatePerNode, c.BurstPerNode = 1000, 1000
		// A TTL shorter than the node's run, so its token is reviewed again
		// during the flood (through the reserved slots).
		c.Admission = ca.Admission{MaxReviewsInFlight: maxFlight, ReservedReviews: reserved, RatePerSource: rate,
			BurstPerSource: burst, CacheTTL: 100 * time.Millisecond}
	})
	env.Pods.Add("node-a", "shop", "web")
	client, err := env.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	p := identity.CSRProvider{Signer: client}
	if _, err := p.FetchSVID(ctxT(t), wl("shop", "web")); err != nil { // the node is known before the flood
		t.Fatal(err)
	}
	before := auth.calls.Load()

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sent, transportErrs atomic.Int64
	statuses := sync.Map{}
	body, _ := json.Marshal(ca.SignRequest{SpiffeID: wl("shop", "web").String(), CSR: csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{wl("shop", "web").URL()}})})
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := flooder(t, env, 2+w%sources)
			defer hc.CloseIdleConnections()
			for i := 0; ctx.Err() == nil; i++ {
				st, err := post(ctx, hc, env, catest.Token(fmt.Sprintf("flood-%d-%d", w, i)), body)
				if err != nil {
					if ctx.Err() == nil {
						if strings.Contains(err.Error(), "Retry-After") {
							t.Error(err)
						}
						transportErrs.Add(1)
					}
					continue
				}
				sent.Add(1)
				n, _ := statuses.LoadOrStore(st, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // the flood is on
	var worst time.Duration
	for i := range 10 {
		t0 := time.Now()
		if _, err := p.FetchSVID(ctxT(t), wl("shop", "web")); err != nil {
			t.Fatalf("node's request %d during the flood: %v", i, err)
		}
		worst = max(worst, time.Since(t0))
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	wg.Wait()
	elapsed := time.Since(start)

	st := env.Server.Stats()
	flood := auth.calls.Load() - before
	allowed := int64(sources*(burst+rate*elapsed.Seconds())) + 10
	var byStatus []string
	statuses.Range(func(k, v any) bool {
		byStatus = append(byStatus, fmt.Sprintf("%v:%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("%.1fs: %d flood requests (%v, %d transport errors), %d reviews (bound %d), peak %d in flight, node's worst latency %s, stats %+v",
		elapsed.Seconds(), sent.Load(), byStatus, transportErrs.Load(), flood, allowed, auth.peakIn.Load(), worst, st.Admission)
	if worst > 5*time.Second {
		t.Errorf("node waited %s for a certificate during the flood, want under 5s", worst)
	}
	if pk := auth.peakIn.Load(); pk > maxFlight+reserved {
		t.Errorf("%d reviews in flight, cap %d+%d", pk, maxFlight, reserved)
	}
	if flood > allowed {
		t.Errorf("%d reviews during the flood, over the per-source bound %d", flood, allowed)
	}
	if 2*flood >= sent.Load() {
		t.Errorf("%d reviews for %d flood requests: not even half were spared", flood, sent.Load())
	}
	if st.Denied[ca.ReasonSourceRateLimited]+st.Denied[ca.ReasonOverloaded] == 0 || st.Denied[ca.ReasonUnauthenticated] == 0 {
		t.Errorf("refusals not counted: %v", st.Denied)
	}
	if st.Admission.Reserved == 0 {
		t.Errorf("the node's token was never re-reviewed in a reserved slot: %+v", st.Admission)
	}
	lines := strings.Count(logs.String(), `"msg":"ca: denied"`)
	if max := int(elapsed.Seconds()+2) * 10 * 3; lines > max {
		t.Errorf("%d denial log lines in %s, want at most %d (10 per reason per second)", lines, elapsed, max)
	}
	if !strings.Contains(logs.String(), `"suppressed_before":`) {
		t.Error("no log line says how many denials were suppressed")
	}
}

// TestCheapRefusals: malformed, expired and wrong-audience tokens, and a
// CSR over its size limit, are refused without a TokenReview.
func TestCheapRefusals(t *testing.T) {
	auth := &slowAuth{}
	env, _ := startEnv(t, func(c *ca.Config) { auth.next = c.Authenticator; c.Authenticator = auth })
	hc := flooder(t, env, 1)
	defer hc.CloseIdleConnections()
	good, _ := json.Marshal(ca.SignRequest{SpiffeID: wl("shop", "web").String(), CSR: []byte{0x30}})
	big, _ := json.Marshal(ca.SignRequest{SpiffeID: wl("shop", "web").String(), CSR: bytes.Repeat([]byte{0x30}, ca.MaxCSRBytes+1)})
	for i := range 500 {
		for _, c := range []struct {
			token string
			body  []byte
			want  int
		}{
			{fmt.Sprint("not-a-jwt-", i), good, 401},
			{catest.TokenFor(fmt.Sprint("n", i), time.Now().Add(-time.Minute), catest.Audience), good, 401},
			{catest.TokenFor(fmt.Sprint("n", i), catest.FarFuture, "api"), good, 401},
			{catest.Token(fmt.Sprint("n", i)), big, 400},
		} {
			if st, err := post(ctxT(t), hc, env, c.token, c.body); err != nil || st != c.want {
				t.Fatalf("%d %v, want %d", st, err, c.want)
			}
		}
	}
	st := env.Server.Stats()
	if n := auth.calls.Load(); n != 0 {
		t.Fatalf("%d TokenReviews for 2,000 requests refused by pre-checks", n)
	}
	if st.Denied[ca.ReasonTokenMalformed] != 500 || st.Denied[ca.ReasonTokenExpired] != 500 ||
		st.Denied[ca.ReasonTokenAudience] != 500 || st.Denied[ca.ReasonCSRTooLarge] != 500 {
		t.Fatalf("denials %v", st.Denied)
	}
}

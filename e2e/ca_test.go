package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/identity/ca/catest"
	"github.com/ambit-mesh/ambit/node/kubeca"
)

// TestCAKubernetes runs the built-in CA (identity/ca's Server over HTTPS,
// in-process) with its Kubernetes pieces (node/kubeca: TokenReview
// Authenticator, pod-informer PodLocator) against the real API server, as
// its own ServiceAccount with only the RBAC the chart grants. The node
// daemon's tokens are real bound tokens from the TokenRequest API, bound to
// real pods on real nodes, so the pod and node claims are the API server's.
// A CSR is signed only for an identity with a pod on the caller's node;
// tokens bound to a pod on the other node, of another ServiceAccount, for
// another audience, without a pod binding, tampered or forged are refused
// with their reason; a deleted pod stops counting once the informer sees it,
// and the pod recreated on the other node moves the identity there.
func TestCAKubernetes(t *testing.T) {
	opts := cluster.Options{NoDNS: true, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	cluster.SkipIfUnavailable(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // includes waiting for another package's cluster
	defer cancel()
	c, err := cluster.Start(ctx, t, opts)
	if err != nil {
		t.Fatal(err)
	}
	cs := c.Clientset()
	nodeA, nodeB := c.Nodes[0].Name, c.Nodes[1].Name

	for _, ns := range []string{ambitNamespace, "shop"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createCARBAC(ctx, t, cs)
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The node daemon's pods (one per node) and a workload on node A.
	pods := map[string]*corev1.Pod{}
	for _, p := range []struct{ ns, name, sa, node string }{
		{ambitNamespace, "ambit-a", nodeAccount, nodeA},
		{ambitNamespace, "ambit-b", nodeAccount, nodeB},
		{"shop", "web", "web", nodeA},
	} {
		if _, err := cs.CoreV1().Pods(p.ns).Create(ctx, pausePod(p.name, p.sa, p.node), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		running, err := c.WaitPods(ctx, p.ns, "ca-e2e="+p.name, 1, cluster.PodReady)
		if err != nil {
			t.Fatal(err)
		}
		pods[p.name] = &running[0]
	}

	// The CA talks to the API server as its own ServiceAccount.
	caClient := caClientset(ctx, t, c, cs)
	if _, err := caClient.CoreV1().Secrets(ambitNamespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("the CA's account can list secrets (err %v): RBAC grants more than the CA needs", err)
	}
	auth, err := kubeca.NewAuthenticator(kubeca.AuthenticatorConfig{Client: caClient, Audiences: []string{caAudience}})
	if err != nil {
		t.Fatal(err)
	}
	locator, err := kubeca.NewPodLocator(kubeca.PodLocatorConfig{Client: caClient})
	if err != nil {
		t.Fatal(err)
	}
	audit := &lockedBuffer{}
	reviews := &timedAuth{next: auth}
	env, err := catest.Start(catest.Options{Dir: t.TempDir(), Mutate: func(cfg *ca.Config) {
		cfg.Authenticator, cfg.Pods = reviews, locator
		cfg.NodeNamespace, cfg.NodeServiceAccount = ambitNamespace, nodeAccount
		cfg.TokenAudiences = []string{caAudience}
		cfg.TokenSubject = "system:serviceaccount:" + ambitNamespace + ":" + nodeAccount
		cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(audit, testWriter{t}), nil))
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	if code := readyz(env.Server); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz before the pod informer synced: %d, want 503", code)
	}
	locCtx, stopLocator := context.WithCancel(ctx)
	defer stopLocator()
	locator.Start(locCtx)
	if err := locator.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	if code := readyz(env.Server); code != http.StatusOK {
		t.Fatalf("readyz after sync: %d, want 200", code)
	}
	client, err := env.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	web, err := identity.Workload(env.Bundle.TrustDomain(), "shop", "web")
	if err != nil {
		t.Fatal(err)
	}
	sign := func(token string, id spiffeid.ID) (*x509svid.SVID, error) {
		t.Helper()
		// The client re-reads the token file on every request, as it does
		// when the kubelet rotates the projected token.
		if err := os.WriteFile(env.TokenFile, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		return identity.CSRProvider{Signer: client}.FetchSVID(ctx, id)
	}
	signed := func(name, token string, id spiffeid.ID) {
		t.Helper()
		svid, err := sign(token, id)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := identity.CheckSVID(svid, id, env.Bundle, time.Now()); err != nil {
			t.Fatalf("%s: issued certificate: %v", name, err)
		}
	}
	wantDenied := map[ca.Reason]uint64{}
	denied := func(name, token string, id spiffeid.ID, want ca.Reason) {
		t.Helper()
		svid, err := sign(token, id)
		var re *ca.RemoteError
		if !errors.As(err, &re) || re.Reason != want {
			t.Fatalf("%s: got %v (certificate issued: %v), want a denial %q", name, err, svid != nil, want)
		}
		wantDenied[want]++
		t.Logf("%s: denied %s: %s", name, re.Reason, re.Message)
	}

	tokA := requestToken(ctx, t, cs, ambitNamespace, nodeAccount, pods["ambit-a"], caAudience)
	tokB := requestToken(ctx, t, cs, ambitNamespace, nodeAccount, pods["ambit-b"], caAudience)
	// The node and pod claims are the API server's own (Kubernetes 1.32+
	// puts the bound pod's node in the token).
	review, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: tokA, Audiences: []string{caAudience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ex := review.Status.User.Extra; !slices.Equal(ex[kubeca.ExtraNodeName], authnv1.ExtraValue{nodeA}) ||
		!slices.Equal(ex[kubeca.ExtraPodName], authnv1.ExtraValue{"ambit-a"}) ||
		!slices.Equal(ex[kubeca.ExtraPodUID], authnv1.ExtraValue{string(pods["ambit-a"].UID)}) {
		t.Fatalf("TokenReview of node A's token: extra %v, want node %s, pod ambit-a", ex, nodeA)
	}
	caller, err := auth.Authenticate(ctx, tokA)
	want := ca.Caller{Namespace: ambitNamespace, ServiceAccount: nodeAccount, Node: nodeA, Pod: "ambit-a"}
	if err != nil || caller != want {
		t.Fatalf("TokenReview of node A's token: %+v, %v; want %+v", caller, err, want)
	}

	signed("node A asks for shop/web (pod on node A)", tokA, web)
	denied("node B asks for shop/web (pod on node A)", tokB, web, ca.ReasonNoPodOnNode)
	denied("the workload's own token (another ServiceAccount)", requestToken(ctx, t, cs, "shop", "web", pods["web"], caAudience), web, ca.ReasonWrongServiceAccount)
	denied("node token for the API server's audience", requestToken(ctx, t, cs, ambitNamespace, nodeAccount, pods["ambit-a"], "https://kubernetes.default.svc.cluster.local"), web, ca.ReasonTokenAudience)
	denied("node token bound to no pod", requestToken(ctx, t, cs, ambitNamespace, nodeAccount, nil, caAudience), web, ca.ReasonNoNode)
	denied("node B's token with its signature tampered", tokB[:len(tokB)-4]+flip(tokB[len(tokB)-4:]), web, ca.ReasonUnauthenticated)
	denied("node B's token with its claims rewritten to node A's pod", tamperClaims(t, tokB, "ambit-b", "ambit-a"), web, ca.ReasonUnauthenticated)
	denied("node A's claims signed with a key the API server never used", forgeToken(t, tokA), web, ca.ReasonUnauthenticated)

	// A flood of forged tokens while node A keeps signing (caflood_test.go).
	floodDenied := floodCA(ctx, t, env, reviews, tokA, web)

	// The workload's pod goes away: once the informer sees it, node A can no
	// longer obtain its identity.
	if err := cs.CoreV1().Pods("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	waitHasPod(ctx, t, locator, nodeA, "shop", "web", false)
	t.Logf("informer saw the pod gone %s after the delete", time.Since(t0).Round(time.Millisecond))
	denied("node A asks for shop/web after its pod was deleted", tokA, web, ca.ReasonNoPodOnNode)

	// It comes back on node B (a pod that moved): node B may obtain it now,
	// node A still may not.
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, pausePod("web-2", "web", nodeB), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitHasPod(ctx, t, locator, nodeB, "shop", "web", true)
	signed("node B asks for shop/web (moved to node B)", tokB, web)
	denied("node A asks for shop/web (moved to node B)", tokA, web, ca.ReasonNoPodOnNode)

	st := env.Server.Stats()
	if st.Issued != 2+floodSigns {
		t.Errorf("CA issued %d certificates, want %d", st.Issued, 2+floodSigns)
	}
	for r, n := range wantDenied {
		if r == ca.ReasonUnauthenticated {
			n += floodDenied
		}
		if st.Denied[r] != n {
			t.Errorf("denied[%s] = %d, want %d (all: %v)", r, st.Denied[r], n, st.Denied)
		}
	}
	logs := audit.String()
	if n := strings.Count(logs, "ca: issued"); n != 2+floodSigns {
		t.Errorf("%d issuance audit lines, want %d (one per certificate issued)", n, 2+floodSigns)
	}
	if !strings.Contains(logs, "reason=no_pod_on_node node="+nodeB) || !strings.Contains(logs, "reason=wrong_service_account") {
		t.Errorf("audit log lacks the denials with reason and node:\n%s", logs)
	}
}

// caClientset returns a clientset authenticated as the CA's ServiceAccount
// (a token from the TokenRequest API, no admin certificate), once its RBAC
// binding is in force.
func caClientset(ctx context.Context, t *testing.T, c *cluster.Cluster, admin kubernetes.Interface) kubernetes.Interface {
	t.Helper()
	cfg := rest.AnonymousClientConfig(c.RESTConfig())
	cfg.BearerToken = requestToken(ctx, t, admin, ambitNamespace, caAccount, nil)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{Limit: 1})
		if err == nil {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CA's account cannot list pods: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitHasPod(ctx context.Context, t *testing.T, l *kubeca.PodLocator, node, ns, sa string, want bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := l.HasPod(ctx, node, ns, sa)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("HasPod(%s, %s, %s) = %v, %v; want %v within 60s", node, ns, sa, got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readyz(s *ca.Server) int {
	rec := httptest.NewRecorder()
	s.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code
}

// lockedBuffer collects the CA's log lines (its audit trail).
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

package kubeca_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/ambit-mesh/ambit/identity/ca"
	"github.com/ambit-mesh/ambit/node/kubeca"
)

// token is what the fake API server knows about a token.
type token struct {
	user      string
	audiences []string
	expired   bool
	extra     map[string]authv1.ExtraValue
}

// reviewReactor answers TokenReviews the way kube-apiserver does: unknown
// tokens and expired ones are not authenticated, and a token is
// authenticated only for audiences it was issued for.
func reviewReactor(tokens map[string]token) k8stesting.ReactionFunc {
	return func(action k8stesting.Action) (bool, runtime.Object, error) {
		tr := action.(k8stesting.CreateAction).GetObject().(*authv1.TokenReview).DeepCopy()
		tok, ok := tokens[tr.Spec.Token]
		switch {
		case tr.Spec.Token == "api-down":
			return true, nil, errors.New("connection refused")
		case !ok:
			tr.Status = authv1.TokenReviewStatus{Error: "invalid bearer token, token lookup failed"}
		case tok.expired:
			tr.Status = authv1.TokenReviewStatus{Error: "invalid bearer token, service account token has expired"}
		default:
			var aud []string
			for _, a := range tr.Spec.Audiences {
				if slices.Contains(tok.audiences, a) {
					aud = append(aud, a)
				}
			}
			if len(aud) == 0 {
				tr.Status = authv1.TokenReviewStatus{Error: "invalid bearer token, token audiences is invalid"}
				break
			}
			tr.Status = authv1.TokenReviewStatus{Authenticated: true, Audiences: aud,
				User: authv1.UserInfo{Username: tok.user, Extra: tok.extra}}
		}
		return true, tr, nil
	}
}

func pod(ns, name, uid, node, sa string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: uidOf(uid)},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

func uidOf(s string) types.UID { return types.UID(s) }

func TestAuthenticator(t *testing.T) {
	client := fake.NewClientset(pod("ambit-system", "ambit-x1", "uid-1", "node-b", "ambit", corev1.PodRunning))
	node := func(n string) map[string]authv1.ExtraValue {
		return map[string]authv1.ExtraValue{kubeca.ExtraNodeName: {n}}
	}
	podx := func(name, uid string) map[string]authv1.ExtraValue {
		return map[string]authv1.ExtraValue{kubeca.ExtraPodName: {name}, kubeca.ExtraPodUID: {uid}}
	}
	tokens := map[string]token{
		"node-bound":  {user: "system:serviceaccount:ambit-system:ambit", audiences: []string{"ambit-ca"}, extra: node("node-a")},
		"pod-bound":   {user: "system:serviceaccount:ambit-system:ambit", audiences: []string{"ambit-ca"}, extra: podx("ambit-x1", "uid-1")},
		"pod-reused":  {user: "system:serviceaccount:ambit-system:ambit", audiences: []string{"ambit-ca"}, extra: podx("ambit-x1", "uid-OLD")},
		"pod-gone":    {user: "system:serviceaccount:ambit-system:ambit", audiences: []string{"ambit-ca"}, extra: podx("ambit-gone", "uid-9")},
		"unbound":     {user: "system:serviceaccount:ambit-system:ambit", audiences: []string{"ambit-ca"}},
		"expired":     {user: "system:serviceaccount:ambit-system:ambit", audiences: []string{"ambit-ca"}, expired: true},
		"api-aud":     {user: "system:serviceaccount:ambit-system:ambit", audiences: []string{"https://kubernetes.default.svc"}, extra: node("node-a")},
		"other-sa":    {user: "system:serviceaccount:shop:web", audiences: []string{"ambit-ca"}, extra: node("node-a")},
		"human":       {user: "alice", audiences: []string{"ambit-ca"}},
		"bad-sa-name": {user: "system:serviceaccount:ambit-system", audiences: []string{"ambit-ca"}},
	}
	client.PrependReactor("create", "tokenreviews", reviewReactor(tokens))
	a, err := kubeca.NewAuthenticator(kubeca.AuthenticatorConfig{Client: client, Audiences: []string{"ambit-ca"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ok := map[string]ca.Caller{
		"node-bound": {Namespace: "ambit-system", ServiceAccount: "ambit", Node: "node-a"},
		"pod-bound":  {Namespace: "ambit-system", ServiceAccount: "ambit", Node: "node-b", Pod: "ambit-x1"},
		"unbound":    {Namespace: "ambit-system", ServiceAccount: "ambit"},
		"other-sa":   {Namespace: "shop", ServiceAccount: "web", Node: "node-a"},
	}
	for tok, want := range ok {
		got, err := a.Authenticate(ctx, tok)
		if err != nil || got != want {
			t.Errorf("%s: got %+v, %v; want %+v", tok, got, err, want)
		}
	}
	for _, tok := range []string{"expired", "api-aud", "forged.jwt.value", "pod-reused", "human", "bad-sa-name"} {
		if _, err := a.Authenticate(ctx, tok); !errors.Is(err, ca.ErrUnauthenticated) {
			t.Errorf("%s: err = %v, want ErrUnauthenticated", tok, err)
		}
	}
	for _, tok := range []string{"api-down", "pod-gone"} {
		_, err := a.Authenticate(ctx, tok)
		if err == nil || errors.Is(err, ca.ErrUnauthenticated) {
			t.Errorf("%s: err = %v, want an API error (not a denial)", tok, err)
		}
	}
	// The review asked for the CA's audience.
	var asked []string
	for _, act := range client.Actions() {
		if act.GetResource().Resource == "tokenreviews" {
			asked = act.(k8stesting.CreateAction).GetObject().(*authv1.TokenReview).Spec.Audiences
		}
	}
	if !slices.Equal(asked, []string{"ambit-ca"}) {
		t.Fatalf("review audiences %v", asked)
	}
}

func TestPodLocator(t *testing.T) {
	client := fake.NewClientset(
		pod("shop", "web-1", "u1", "node-a", "web", corev1.PodRunning),
		pod("shop", "job-1", "u2", "node-a", "batch", corev1.PodSucceeded),
		pod("shop", "new-1", "u3", "node-a", "", corev1.PodPending),
		pod("shop", "db-1", "u4", "node-b", "db", corev1.PodRunning),
	)
	p, err := kubeca.NewPodLocator(kubeca.PodLocatorConfig{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.HasPod(context.Background(), "node-a", "shop", "web"); !errors.Is(err, kubeca.ErrNotSynced) {
		t.Fatalf("before sync: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.Start(ctx)
	if err := p.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		node, ns, sa string
		want         bool
	}{
		{"node-a", "shop", "web", true},
		{"node-a", "shop", "default", true}, // Pending, no SA set: default
		{"node-a", "shop", "batch", false},  // Succeeded
		{"node-a", "shop", "db", false},     // on node-b
		{"node-b", "shop", "db", true},
		{"node-a", "other", "web", false},
	}
	for _, c := range cases {
		got, err := p.HasPod(ctx, c.node, c.ns, c.sa)
		if err != nil || got != c.want {
			t.Errorf("HasPod(%s, %s, %s) = %v, %v; want %v", c.node, c.ns, c.sa, got, err, c.want)
		}
	}
	// The db pod is replaced by one on node-a (a pod "moving"): node-b loses it.
	if err := client.CoreV1().Pods("shop").Delete(ctx, "db-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods("shop").Create(ctx, pod("shop", "db-1", "u5", "node-a", "db", corev1.PodPending), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		b, _ := p.HasPod(ctx, "node-b", "shop", "db")
		a, _ := p.HasPod(ctx, "node-a", "shop", "db")
		return !b && a
	})
	// A pod that terminates stops counting.
	web := pod("shop", "web-1", "u1", "node-a", "web", corev1.PodFailed)
	if _, err := client.CoreV1().Pods("shop").UpdateStatus(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { b, _ := p.HasPod(ctx, "node-a", "shop", "web"); return !b })
}

func eventually(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package kubeca

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ambit-mesh/ambit/identity/ca"
)

// Extra keys the API server sets on service account tokens bound to objects.
const (
	ExtraNodeName = "authentication.kubernetes.io/node-name"
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
)

const saPrefix = "system:serviceaccount:"

// AuthenticatorConfig configures an Authenticator.
type AuthenticatorConfig struct {
	Client    kubernetes.Interface // required
	Audiences []string             // required: the CA's token audiences
}

// Authenticator implements ca.Authenticator with TokenReview.
type Authenticator struct {
	cfg AuthenticatorConfig
}

var _ ca.Authenticator = (*Authenticator)(nil)

// NewAuthenticator checks cfg.
func NewAuthenticator(cfg AuthenticatorConfig) (*Authenticator, error) {
	if cfg.Client == nil {
		return nil, errors.New("kubeca: Client required")
	}
	if len(cfg.Audiences) == 0 {
		return nil, errors.New("kubeca: at least one audience required")
	}
	return &Authenticator{cfg: cfg}, nil
}

// Authenticate implements ca.Authenticator. Invalid tokens give errors
// wrapping ca.ErrUnauthenticated; API failures give other errors.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (ca.Caller, error) {
	tr, err := a.cfg.Client.AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{
		Spec: authv1.TokenReviewSpec{Token: token, Audiences: a.cfg.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return ca.Caller{}, fmt.Errorf("kubeca: token review: %w", err)
	}
	st := tr.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "token not authenticated"
		}
		return ca.Caller{}, fmt.Errorf("%w: %s", ca.ErrUnauthenticated, msg)
	}
	if !slices.ContainsFunc(st.Audiences, func(s string) bool { return slices.Contains(a.cfg.Audiences, s) }) {
		return ca.Caller{}, fmt.Errorf("%w: token audiences %v do not include %v", ca.ErrUnauthenticated, st.Audiences, a.cfg.Audiences)
	}
	rest, ok := strings.CutPrefix(st.User.Username, saPrefix)
	ns, name, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || name == "" || strings.Contains(name, ":") {
		return ca.Caller{}, fmt.Errorf("%w: %q is not a service account", ca.ErrUnauthenticated, st.User.Username)
	}
	c := ca.Caller{Namespace: ns, ServiceAccount: name}
	extra := func(k string) string {
		if v := st.User.Extra[k]; len(v) == 1 {
			return v[0]
		}
		return ""
	}
	c.Pod = extra(ExtraPodName)
	if node := extra(ExtraNodeName); node != "" {
		c.Node = node
		return c, nil
	}
	if c.Pod == "" {
		return c, nil // not bound: the CA refuses it (no_node_binding)
	}
	pod, err := a.cfg.Client.CoreV1().Pods(ns).Get(ctx, c.Pod, metav1.GetOptions{})
	if err != nil {
		return ca.Caller{}, fmt.Errorf("kubeca: bound pod %s/%s: %w", ns, c.Pod, err)
	}
	if uid := extra(ExtraPodUID); uid != "" && string(pod.UID) != uid {
		return ca.Caller{}, fmt.Errorf("%w: bound pod %s/%s was replaced (uid %s, token for %s)", ca.ErrUnauthenticated, ns, c.Pod, pod.UID, uid)
	}
	c.Node = pod.Spec.NodeName
	return c, nil
}

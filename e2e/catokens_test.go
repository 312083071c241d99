package e2e

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The accounts of the CA scenario: the node daemon's (the only account the
// CA signs for) and the CA's own.
const (
	ambitNamespace = "ambit-system"
	nodeAccount    = "ambit"
	caAccount      = "ambit-ca"
	caAudience     = "ambit-ca"
)

// createCARBAC creates the CA's service account with what the chart grants
// it: TokenReview create and read access to pods (the pod locator's
// list/watch, and get for tokens without a node claim). Nothing more.
func createCARBAC(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	for _, sa := range []string{nodeAccount, caAccount} {
		if _, err := cs.CoreV1().ServiceAccounts(ambitNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "ambit-ca"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ambit-ca"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ambitNamespace, Name: caAccount}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// pausePod is a pod of namespace/serviceAccount pinned to node, running the
// harness's pause image (imported on every node), with no API token mounted.
func pausePod(name, serviceAccount, node string) *corev1.Pod {
	no := false
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"ca-e2e": name}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			ServiceAccountName:            serviceAccount,
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name:            "main",
				Image:           "ambit.test/pause:e2e",
				ImagePullPolicy: corev1.PullNever,
			}},
		},
	}
}

// requestToken mints a ServiceAccount token with the TokenRequest API, as
// the kubelet does for a projected volume: bound to pod when pod is not nil
// (the API server then puts the pod's name, UID and node in the token).
func requestToken(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, sa string, pod *corev1.Pod, audiences ...string) string {
	t.Helper()
	ttl := int64(600)
	spec := authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &ttl}
	if pod != nil {
		spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Status.Token == "" {
		t.Fatal("TokenRequest returned an empty token")
	}
	return tr.Status.Token
}

// forgeToken re-signs a real token's header and claims with a key of its
// own: a well-formed RS256 JWT with exactly the right issuer, audience,
// subject and bound pod that the API server never issued.
func forgeToken(t *testing.T, real string) string {
	t.Helper()
	parts := strings.Split(real, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signed := parts[0] + "." + parts[1]
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// tamperClaims rewrites old to repl in a real token's claims (e.g. the bound
// pod), keeping the API server's signature, which no longer matches.
func tamperClaims(t *testing.T, real, old, repl string) string {
	t.Helper()
	parts := strings.Split(real, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(claims), old) {
		t.Fatalf("token claims do not mention %q", old)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.ReplaceAll(string(claims), old, repl)))
	return strings.Join(parts, ".")
}

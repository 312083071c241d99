package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// checkTokenReview creates ServiceAccount tokens with the TokenRequest API
// and checks TokenReview accepts them for their audience only.
func checkTokenReview(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string) {
	cs := c.Clientset()
	sa, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "e2e-identity"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const aud = "ambit-e2e-ca"
	ttl := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa.Name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{aud}, ExpirationSeconds: &ttl},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := tr.Status.Token
	if token == "" {
		t.Fatal("TokenRequest returned an empty token")
	}
	review := func(tok string, auds []string) *authnv1.TokenReviewStatus {
		t.Helper()
		r, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
			Spec: authnv1.TokenReviewSpec{Token: tok, Audiences: auds},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return &r.Status
	}
	st := review(token, []string{aud})
	wantUser := "system:serviceaccount:" + ns + ":e2e-identity"
	if !st.Authenticated || st.User.Username != wantUser {
		t.Errorf("TokenReview: authenticated=%v user=%q error=%q; want %q", st.Authenticated, st.User.Username, st.Error, wantUser)
	}
	if len(st.Audiences) != 1 || st.Audiences[0] != aud {
		t.Errorf("TokenReview audiences %v, want [%s]", st.Audiences, aud)
	}
	if st.User.UID != string(sa.UID) {
		t.Errorf("TokenReview uid %q, want the ServiceAccount's %q", st.User.UID, sa.UID)
	}
	if st := review(token, []string{"someone-else"}); st.Authenticated {
		t.Error("TokenReview accepted the token for another audience")
	}
	tampered := token[:len(token)-4] + flip(token[len(token)-4:])
	if st := review(tampered, []string{aud}); st.Authenticated {
		t.Error("TokenReview accepted a token with a modified signature")
	}
	t.Logf("TokenReview: %s authenticated for %v", st.User.Username, st.Audiences)
}

// checkTools proves kubectl and helm work against the cluster: kubectl
// lists both nodes; helm installs a chart whose ConfigMap then exists with
// the value set on the command line, and uninstalls it.
func checkTools(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string) {
	out, err := c.Kubectl(ctx, "get", "nodes", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "node/node-1") || !strings.Contains(out, "node/node-2") {
		t.Errorf("kubectl get nodes: %q", out)
	}
	chart := t.TempDir()
	files := map[string]string{
		"Chart.yaml":            "apiVersion: v2\nname: smoke\nversion: 0.1.0\n",
		"values.yaml":           "marker: default\n",
		"templates/marker.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-marker\ndata:\n  marker: {{ .Values.marker | quote }}\n",
	}
	for name, body := range files {
		p := filepath.Join(chart, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Helm(ctx, "install", "smoke", chart, "-n", ns, "--set", "marker=from-helm", "--wait"); err != nil {
		t.Fatal(err)
	}
	cm, err := c.Clientset().CoreV1().ConfigMaps(ns).Get(ctx, "smoke-marker", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ConfigMap of the helm release: %v", err)
	}
	if cm.Data["marker"] != "from-helm" {
		t.Errorf("helm release ConfigMap data %v, want marker=from-helm", cm.Data)
	}
	if _, err := c.Helm(ctx, "uninstall", "smoke", "-n", ns, "--wait"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Clientset().CoreV1().ConfigMaps(ns).Get(ctx, "smoke-marker", metav1.GetOptions{}); err == nil {
		t.Error("ConfigMap still exists after helm uninstall")
	}
}

// checkNodeDaemonSet runs a DaemonSet shaped like ambit's node daemon
// (hostNetwork, the capabilities it needs, the CNI configuration directory
// through hostPath) and checks that each pod runs with its node's address
// and sees its own node's CNI configuration, not the other node's.
func checkNodeDaemonSet(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string) {
	labels := map[string]string{"app": "node-view"}
	hostPathType := corev1.HostPathDirectory
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "node-view"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork: true,
					DNSPolicy:   corev1.DNSClusterFirstWithHostNet,
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name:            "view",
						Image:           echoImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"files", "/host/etc/cni/net.d/10-ambit-e2e.conflist"},
						SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{
							Add: []corev1.Capability{"NET_ADMIN", "SYS_ADMIN", "NET_RAW", "BPF"},
						}},
						VolumeMounts: []corev1.VolumeMount{{Name: "cni-conf", MountPath: "/host/etc/cni/net.d", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "cni-conf", VolumeSource: corev1.VolumeSource{
						HostPath: &corev1.HostPathVolumeSource{Path: "/etc/cni/net.d", Type: &hostPathType},
					}}},
				},
			},
		},
	}
	if _, err := c.Clientset().AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods, err := c.WaitPods(ctx, ns, "app=node-view", len(c.Nodes), cluster.PodReady)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		var pod *corev1.Pod
		for i := range pods {
			if pods[i].Spec.NodeName == n.Name {
				pod = &pods[i]
			}
		}
		if pod == nil {
			t.Errorf("no node-view pod on %s", n.Name)
			continue
		}
		if pod.Status.PodIP != n.IP.String() {
			t.Errorf("hostNetwork pod on %s has IP %s, want the node's %s", n.Name, pod.Status.PodIP, n.IP)
		}
		var logs string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if logs, err = c.PodLogs(ctx, ns, pod.Name, "view"); err == nil && strings.Contains(logs, "subnet") {
				break
			}
		}
		if !strings.Contains(logs, `"subnet": "`+n.PodCIDR.String()+`"`) {
			t.Errorf("pod on %s sees a CNI configuration without its node's subnet %s:\n%s", n.Name, n.PodCIDR, logs)
		}
	}
}

func flip(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}

//go:build linux

package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Cluster DNS: CoreDNS (built by e2e/hack/build-bins.sh, imaged like any
// other binary) runs as the kube-dns Deployment and Service in kube-system
// at the 10th address of the Service CIDR, and every kubelet points pods at
// it, so names like ambit-ca.ambit-system.svc resolve in pods as on any
// cluster. It answers only for cluster.local (the machine has no upstream
// resolver worth forwarding to).
const (
	// CoreDNSImage is the image the harness builds from bin/coredns.
	CoreDNSImage = "ambit.test/coredns:e2e"
	// ClusterDomain is the cluster's DNS domain.
	ClusterDomain = "cluster.local"
)

const corefile = `.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
    loop
    loadbalance
}
`

// dnsIP is the ClusterIP of the kube-dns Service.
func (c *Cluster) dnsIP() string { return nthIP(c.serviceCIDR, 10).String() }

// buildDNSImage writes the CoreDNS image tarball, or reuses the one cached
// in <BaseDir>/image-cache for the same bin/coredns (compressing its 70 MB
// layer takes seconds).
func (c *Cluster) buildDNSImage() (string, error) {
	st, err := os.Stat(c.bin("coredns"))
	if err != nil {
		return "", err
	}
	out := filepath.Join(c.opts.BaseDir, "image-cache", fmt.Sprintf("coredns-%d-%d.tar", st.Size(), st.ModTime().UnixNano()))
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp := out + ".tmp"
	err = WriteImageTar(Image{
		Ref:        CoreDNSImage,
		Files:      map[string]string{"/coredns": c.bin("coredns")},
		Entrypoint: []string{"/coredns"},
	}, tmp)
	if err != nil {
		return "", err
	}
	return out, os.Rename(tmp, out)
}

// deployDNS creates CoreDNS's RBAC, configuration, Deployment and Service.
func (c *Cluster) deployDNS(ctx context.Context) error {
	cs := c.Clientset()
	const ns, name = "kube-system", "coredns"
	labels := map[string]string{"k8s-app": "kube-dns"}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:coredns"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Data:       map[string]string{"Corefile": corefile},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	replicas := int32(1)
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: name,
					DNSPolicy:          corev1.DNSDefault,
					PriorityClassName:  "system-cluster-critical",
					Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name:            "coredns",
						Image:           CoreDNSImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"-conf", "/etc/coredns/Corefile"},
						Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}},
							PeriodSeconds: 1,
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
						ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}},
					}}},
				},
			},
		},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Labels: labels},
		Spec: corev1.ServiceSpec{
			ClusterIP: c.dnsIP(),
			Selector:  labels,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
			},
		},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	return nil
}

// waitDNS waits for CoreDNS to be Ready and its Service programmed.
func (c *Cluster) waitDNS(ctx context.Context) error {
	if _, err := c.WaitPods(ctx, "kube-system", "k8s-app=kube-dns", 1, PodReady); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := c.WaitService(wctx, "kube-system", "kube-dns", 1); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	return nil
}

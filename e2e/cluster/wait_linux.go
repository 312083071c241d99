//go:build linux

package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WaitPods waits until at least want pods match selector in namespace ns
// and all of them satisfy ok; it returns them. On timeout the error lists
// each pod's phase and container states.
func (c *Cluster) WaitPods(ctx context.Context, ns, selector string, want int, ok func(*corev1.Pod) bool) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	err := waitFor(ctx, fmt.Sprintf("%d pods %q in %s", want, selector, ns), 250*time.Millisecond, c.allProcs(), func(ctx context.Context) error {
		list, err := c.Clientset().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		pods = list.Items
		if len(pods) < want {
			return fmt.Errorf("%d of %d pods exist", len(pods), want)
		}
		for i := range pods {
			if !ok(&pods[i]) {
				return fmt.Errorf("pod %s: %s", pods[i].Name, DescribePod(&pods[i]))
			}
		}
		return nil
	})
	return pods, err
}

// PodReady reports whether the pod's Ready condition is true.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PodDone reports whether the pod has finished (Succeeded or Failed).
func PodDone(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// DescribePod summarises a pod's phase, node, IP and container states.
func DescribePod(p *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s node=%s ip=%s", p.Status.Phase, p.Spec.NodeName, p.Status.PodIP)
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			fmt.Fprintf(&b, " %s=waiting(%s: %s)", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			fmt.Fprintf(&b, " %s=terminated(%d %s)", cs.Name, cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
		case cs.State.Running != nil:
			fmt.Fprintf(&b, " %s=running(ready=%v)", cs.Name, cs.Ready)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			fmt.Fprintf(&b, " %s: %s", c.Type, c.Message)
		}
	}
	return b.String()
}

// PodLogs returns a container's log through the API server (pods/log, which
// the API server fetches from the node's kubelet).
func (c *Cluster) PodLogs(ctx context.Context, ns, pod, container string) (string, error) {
	b, err := c.Clientset().CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("logs of %s/%s: %w", ns, pod, err)
	}
	return string(b), nil
}

// WaitService waits until Service ns/name has at least want ready endpoints
// and every node's kube-proxy has programmed its ClusterIP, so a connection
// to the ClusterIP from any node works. It returns the ClusterIP.
func (c *Cluster) WaitService(ctx context.Context, ns, name string, want int) (string, error) {
	cs := c.Clientset()
	svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	ip := svc.Spec.ClusterIP
	err = waitFor(ctx, fmt.Sprintf("service %s/%s programmed", ns, name), 250*time.Millisecond, c.allProcs(), func(ctx context.Context) error {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + name})
		if err != nil {
			return err
		}
		ready := 0
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					ready += len(e.Addresses)
				}
			}
		}
		if ready < want {
			return fmt.Errorf("%d of %d endpoints ready", ready, want)
		}
		for _, n := range c.Nodes {
			out, err := n.Exec(ctx, "iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES")
			if err != nil {
				return err
			}
			if !strings.Contains(out, "-d "+ip+"/32") || !strings.Contains(out, "-j KUBE-SVC-") {
				return fmt.Errorf("node %s: no kube-proxy rule for %s yet", n.Name, ip)
			}
		}
		return nil
	})
	return ip, err
}

package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/streaming/pkg/httpstream"
)

// forward is a running port-forward to a daemon pod's admin port.
type forward struct {
	// BaseURL is the admin endpoint through the forward
	// (http://127.0.0.1:PORT).
	BaseURL string
	stop    chan struct{}
	done    chan error
	errs    *lineBuffer
}

// Close stops the forward and waits for it.
func (f *forward) Close() {
	close(f.stop)
	<-f.done
}

// Errors returns what the forwarder reported, folded onto one line.
func (f *forward) Errors() string { return f.errs.String() }

// openForward finds the daemon pod (--node or --pod) and forwards its
// admin port to an ephemeral loopback port.
func openForward(ctx context.Context, o *options) (*forward, error) {
	cfg, err := restConfig(o.kubeconfig, o.kctx)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	var pod *corev1.Pod
	if o.node != "" {
		pod, err = findNodePod(ctx, cs, o.namespace, o.daemonset, o.node)
	} else {
		pod, err = getPod(ctx, cs, o.namespace, o.pod)
	}
	if err != nil {
		return nil, err
	}
	return portForward(ctx, cfg, cs, pod, o.adminPort)
}

func restConfig(kubeconfig, kctx string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: kctx}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// findNodePod returns the daemon pod on node: the pods of the DaemonSet's
// selector on that node, chosen by selectPod.
func findNodePod(ctx context.Context, cs kubernetes.Interface, ns, dsName, node string) (*corev1.Pod, error) {
	var ds *appsv1.DaemonSet
	if dsName != "" {
		d, err := cs.AppsV1().DaemonSets(ns).Get(ctx, dsName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("DaemonSet %s/%s: %w", ns, dsName, err)
		}
		ds = d
	} else {
		l, err := cs.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{LabelSelector: DaemonLabel})
		if err != nil {
			return nil, fmt.Errorf("list DaemonSets in %s: %w", ns, err)
		}
		if ds, err = selectDaemonSet(l.Items, ns); err != nil {
			return nil, err
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() {
		return nil, fmt.Errorf("DaemonSet %s/%s: unusable selector %v", ns, ds.Name, ds.Spec.Selector)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String(), FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("list pods of DaemonSet %s/%s: %w", ns, ds.Name, err)
	}
	return selectPod(pods.Items, node, ns+"/"+ds.Name)
}

// selectDaemonSet picks the one ambit DaemonSet of a namespace.
func selectDaemonSet(dss []appsv1.DaemonSet, ns string) (*appsv1.DaemonSet, error) {
	switch len(dss) {
	case 0:
		return nil, fmt.Errorf("no DaemonSet labelled %s in namespace %s (give -n or --daemonset)", DaemonLabel, ns)
	case 1:
		return &dss[0], nil
	}
	names := make([]string, len(dss))
	for i := range dss {
		names[i] = dss[i].Name
	}
	sort.Strings(names)
	return nil, fmt.Errorf("several DaemonSets labelled %s in namespace %s (%s): choose one with --daemonset",
		DaemonLabel, ns, strings.Join(names, ", "))
}

// selectPod picks the daemon pod serving node among a DaemonSet's pods.
// During a rolling update (maxSurge) a node briefly runs two: the newest
// running and ready pod is the one that holds the node's capture; a pod
// being deleted is chosen only if no other runs.
func selectPod(pods []corev1.Pod, node, ds string) (*corev1.Pod, error) {
	var cands []*corev1.Pod
	for i := range pods {
		if pods[i].Spec.NodeName == node {
			cands = append(cands, &pods[i])
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("no pod of DaemonSet %s on node %s (is the node's name right, and is ambit installed there?)", ds, node)
	}
	rank := func(p *corev1.Pod) int {
		r := 0
		if p.Status.Phase == corev1.PodRunning {
			r += 4
		}
		if podReady(p) {
			r += 2
		}
		if p.DeletionTimestamp == nil {
			r++
		}
		return r
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra > rb
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return b.CreationTimestamp.Before(&a.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	best := cands[0]
	if best.Status.Phase != corev1.PodRunning {
		return nil, fmt.Errorf("daemon pod %s/%s on node %s is %s, not running", best.Namespace, best.Name, node, phase(best))
	}
	return best, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func phase(p *corev1.Pod) string {
	if p.Status.Phase == "" {
		return "Pending"
	}
	return string(p.Status.Phase)
}

func getPod(ctx context.Context, cs kubernetes.Interface, ns, name string) (*corev1.Pod, error) {
	p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	if p.Status.Phase != corev1.PodRunning {
		return nil, fmt.Errorf("pod %s/%s is %s, not running", ns, name, phase(p))
	}
	return p, nil
}

// portForward forwards 127.0.0.1:<ephemeral> to port inside pod, through
// the API server (WebSocket, falling back to SPDY as kubectl does).
func portForward(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, pod *corev1.Pod, port int) (*forward, error) {
	u := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forward: %w", err)
	}
	dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	if ws, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, cfg); err == nil {
		dialer = portforward.NewFallbackDialerForStreaming(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	f := &forward{stop: make(chan struct{}), done: make(chan error, 1), errs: &lineBuffer{}}
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, f.stop, ready, io.Discard, f.errs)
	if err != nil {
		return nil, fmt.Errorf("port-forward: %w", err)
	}
	go func() { f.done <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-f.done:
		if err == nil {
			err = errors.New("stopped before it was ready")
		}
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", pod.Namespace, pod.Name, err)
	case <-ctx.Done():
		f.Close()
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", pod.Namespace, pod.Name, ctx.Err())
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		f.Close()
		return nil, fmt.Errorf("port-forward to pod %s/%s: no local port (%v)", pod.Namespace, pod.Name, err)
	}
	f.BaseURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0].Local)
	return f, nil
}

// lineBuffer collects the forwarder's error output (bounded).
type lineBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.b) < 4096 {
		l.b = append(l.b, p[:min(len(p), 4096-len(l.b))]...)
	}
	return len(p), nil
}

func (l *lineBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return truncate(oneLine(string(l.b)), 300)
}

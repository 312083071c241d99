package kubeca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/ambit-mesh/ambit/identity/ca"
)

const byNodeNsSA = "node/ns/sa"

// ErrNotSynced is returned by PodLocator before its informer has synced.
var ErrNotSynced = errors.New("kubeca: pod informer not synced")

// PodLocatorConfig configures a PodLocator.
type PodLocatorConfig struct {
	Client kubernetes.Interface // required
	Resync time.Duration        // optional, default 0 (none)
	Logger *slog.Logger         // optional
}

// PodLocator implements ca.PodLocator from a pod informer.
type PodLocator struct {
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	log      *slog.Logger
}

var (
	_ ca.PodLocator = (*PodLocator)(nil)
	_ ca.Readier    = (*PodLocator)(nil)
)

// NewPodLocator builds the informer; Start runs it.
func NewPodLocator(cfg PodLocatorConfig) (*PodLocator, error) {
	if cfg.Client == nil {
		return nil, errors.New("kubeca: Client required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	f := informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync, informers.WithTransform(stripPod))
	inf := f.Core().V1().Pods().Informer()
	if err := inf.AddIndexers(cache.Indexers{byNodeNsSA: indexPod}); err != nil {
		return nil, err
	}
	return &PodLocator{factory: f, informer: inf, log: cfg.Logger}, nil
}

// Start runs the informer until ctx is done. It does not wait for sync.
func (p *PodLocator) Start(ctx context.Context) {
	p.factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		p.factory.Shutdown()
	}()
}

// WaitForSync blocks until the informer has synced or ctx is done.
func (p *PodLocator) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), p.informer.HasSynced) {
		return fmt.Errorf("%w: %w", ErrNotSynced, ctx.Err())
	}
	return nil
}

// Ready implements ca.Readier.
func (p *PodLocator) Ready() error {
	if !p.informer.HasSynced() {
		return ErrNotSynced
	}
	return nil
}

// HasPod implements ca.PodLocator.
func (p *PodLocator) HasPod(_ context.Context, node, namespace, serviceAccount string) (bool, error) {
	if err := p.Ready(); err != nil {
		return false, err
	}
	objs, err := p.informer.GetIndexer().ByIndex(byNodeNsSA, key(node, namespace, serviceAccount))
	if err != nil {
		return false, err
	}
	for _, o := range objs {
		pod, ok := o.(*corev1.Pod)
		if ok && (pod.Status.Phase == corev1.PodPending || pod.Status.Phase == corev1.PodRunning) {
			return true, nil
		}
	}
	return false, nil
}

func key(node, ns, sa string) string { return node + "/" + ns + "/" + sa }

func indexPod(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return nil, nil
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return []string{key(pod.Spec.NodeName, pod.Namespace, sa)}, nil
}

// stripPod keeps only what HasPod reads, to bound the CA's memory.
func stripPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // tombstones pass through
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID,
			ResourceVersion: pod.ResourceVersion, DeletionTimestamp: pod.DeletionTimestamp},
		Spec:   corev1.PodSpec{NodeName: pod.Spec.NodeName, ServiceAccountName: pod.Spec.ServiceAccountName},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}, nil
}

package policies

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// IstioGroup is Istio's security API group.
const IstioGroup = "security.istio.io"

// istioVersions in order of preference.
var istioVersions = []string{"v1", "v1beta1"}

// discoverIstio returns, per resource (authorizationpolicies,
// peerauthentications), the preferred served version of security.istio.io.
// A resource not served is absent from the map.
func discoverIstio(d Discovery) (map[string]schema.GroupVersionResource, error) {
	found := map[string]schema.GroupVersionResource{}
	for _, v := range istioVersions {
		list, err := d.ServerResourcesForGroupVersion(IstioGroup + "/" + v)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return found, err
		}
		for _, r := range list.APIResources {
			switch r.Name {
			case "authorizationpolicies", "peerauthentications":
				if _, ok := found[r.Name]; !ok {
					found[r.Name] = schema.GroupVersionResource{Group: IstioGroup, Version: v, Resource: r.Name}
				}
			}
		}
	}
	return found, nil
}

// istioLoop runs discovery at start and then every IstioRecheck until both
// resources are watched; each resource's informer starts as soon as it is
// found. (CRDs deleted later: their objects are deleted with them, which
// the watch delivers; the informer then keeps failing to relist and the
// resource shows as stale.)
func (w *Watcher) istioLoop(ctx context.Context, wg *sync.WaitGroup) {
	started := map[string]bool{}
	t := time.NewTicker(w.cfg.IstioRecheck)
	defer t.Stop()
	for {
		found, err := discoverIstio(w.cfg.Discovery)
		w.mu.Lock()
		w.istio.LastCheck = w.cfg.Now()
		w.istio.LastError = ""
		if err != nil {
			w.istio.LastError = err.Error()
		}
		w.mu.Unlock()
		if err != nil {
			w.log.Warn("istio discovery failed; will retry", "err", err, "in", w.cfg.IstioRecheck)
		}
		for _, res := range []string{"authorizationpolicies", "peerauthentications"} {
			gvr, ok := found[res]
			if !ok || started[res] {
				continue
			}
			kd := kindAP
			if res == "peerauthentications" {
				kd = kindPA
			}
			k, err := w.addInformer(gvr, kd, true)
			if err != nil {
				w.log.Error("cannot watch istio resource", "resource", resourceName(gvr), "err", err)
				continue
			}
			started[res] = true
			w.mu.Lock()
			if kd == kindAP {
				w.istio.AuthorizationPolicies = gvr.GroupVersion().String()
			} else {
				w.istio.PeerAuthentications = gvr.GroupVersion().String()
			}
			w.mu.Unlock()
			w.log.Info("watching istio policies", "resource", resourceName(gvr))
			w.factory.Start(ctx.Done())
			wg.Go(func() { w.waitSynced(ctx, k) })
		}
		if err == nil {
			w.mu.Lock()
			first := !w.istioChecked
			w.istioChecked = true
			w.mu.Unlock()
			if first {
				w.applyKick.Kick()
			}
		}
		if len(started) == 2 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

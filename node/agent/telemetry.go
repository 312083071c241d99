package agent

import (
	"strings"

	"github.com/ambit-mesh/ambit/node/metrics"
	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/ambit-mesh/ambit/tunnel"
)

// workloadLabels names both ends of a connection and the Service it was
// for from the tables, for the metrics and the access log: names, never
// addresses. The Service comes from the forwarded host (the client side
// sets it from the Service VIP the app dialled; a server reads it from the
// peer) and is believed only when it names a Service of this cluster
// domain that has the connection's destination as an endpoint, so a peer
// cannot invent label values.
func workloadLabels(t *tables.Tables, clusterDomain string) func(*tunnel.ConnInfo) metrics.WorkloadLabels {
	return func(ci *tunnel.ConnInfo) metrics.WorkloadLabels {
		var l metrics.WorkloadLabels
		if w, ok := t.Lookup(ci.SourceAddr.Addr().Unmap()); ok {
			l.SourceWorkload, l.SourceApp, l.SourceNamespace = workloadName(w), appName(w), w.Namespace
			l.SourceCanonicalService, l.SourceCanonicalRevision = canonical(w)
		}
		if w, ok := t.Lookup(ci.DestAddr.Addr().Unmap()); ok {
			l.DestinationWorkload, l.DestinationApp, l.DestinationNamespace = workloadName(w), appName(w), w.Namespace
			l.DestinationCanonicalService, l.DestinationCanonicalRevision = canonical(w)
		}
		if svc, ok := serviceOfHost(ci.Forwarded.Host, clusterDomain); ok && t.Serves(svc, ci.DestAddr) {
			l.DestinationService = ci.Forwarded.Host
			l.DestinationServiceName, l.DestinationServiceNamespace = svc.Name, svc.Namespace
		}
		return l
	}
}

// serviceOfHost reads "<name>.<namespace>.svc.<domain>".
func serviceOfHost(host, domain string) (tables.Ref, bool) {
	rest, ok := strings.CutSuffix(host, ".svc."+domain)
	if !ok {
		return tables.Ref{}, false
	}
	name, ns, ok := strings.Cut(rest, ".")
	if !ok || name == "" || ns == "" || strings.Contains(ns, ".") {
		return tables.Ref{}, false
	}
	return tables.Ref{Namespace: ns, Name: name}, true
}

// workloadName is the name of the pod's controller as it can be told from
// the pod alone: a ReplicaSet's pod loses "-<template hash>-<suffix>", a
// DaemonSet's or StatefulSet's pod its last segment; a bare pod keeps its
// name.
func workloadName(w tables.Workload) string {
	if h := w.Labels.Get("pod-template-hash"); h != "" {
		if i := strings.LastIndex(w.Name, "-"+h+"-"); i > 0 {
			return w.Name[:i]
		}
	}
	if w.Labels.Has("controller-revision-hash") {
		if i := strings.LastIndex(w.Name, "-"); i > 0 {
			return w.Name[:i]
		}
	}
	return w.Name
}

// appName follows the usual labels: app.kubernetes.io/name, then app.
func appName(w tables.Workload) string {
	if v := w.Labels.Get("app.kubernetes.io/name"); v != "" {
		return v
	}
	return w.Labels.Get("app")
}

// canonical is Istio's canonical service and revision of a pod: the first
// of service.istio.io/canonical-name, app.kubernetes.io/name and app, and
// of service.istio.io/canonical-revision, app.kubernetes.io/version and
// version; "" leaves metrics' defaults (the workload name, "latest").
func canonical(w tables.Workload) (name, revision string) {
	return firstLabel(w, "service.istio.io/canonical-name", "app.kubernetes.io/name", "app"),
		firstLabel(w, "service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
}

func firstLabel(w tables.Workload, keys ...string) string {
	for _, k := range keys {
		if v, ok := w.Labels.Lookup(k); ok {
			return v
		}
	}
	return ""
}

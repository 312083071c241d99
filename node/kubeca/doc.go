// Package kubeca provides the Kubernetes-backed pieces of ambit's built-in
// CA (identity/ca), kept out of identity/ so that package never imports
// client-go:
//
//   - Authenticator: a TokenReview (authentication.k8s.io/v1) of the node
//     daemon's projected ServiceAccount token with the CA's audiences. The
//     reviewed token must be authenticated, carry one of the audiences, and
//     belong to a service account; its node comes from the bound-object
//     claims: "authentication.kubernetes.io/node-name" when the API server
//     puts it there (Kubernetes 1.32+), otherwise the bound pod
//     ("authentication.kubernetes.io/pod-name", same namespace as the
//     service account, UID checked against "…/pod-uid") and its
//     spec.nodeName, read live from the API server.
//   - PodLocator: a pod informer (all namespaces, objects stripped to name,
//     UID, node, service account and phase) indexed by node/namespace/
//     service account; a pod counts while it is Pending or Running. It is
//     not ready (and answers errors, which the CA turns into 503) until the
//     informer has synced.
//
// Both take a kubernetes.Interface, so unit tests use client-go's fake
// clientset and the e2e tier a real API server.
package kubeca

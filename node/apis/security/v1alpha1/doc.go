// Package v1alpha1 holds the Go types of ambit's security.ambit.dev/v1alpha1
// API: AuthorizationPolicy and PeerAuthentication.
//
// The types are, field for field, the L4 subset of Istio's
// security.istio.io/v1 resources with the same JSON names, so an Istio policy
// carries over by changing its apiVersion. Fields that only make sense at L7
// (methods, paths, hosts, request principals, remote IP blocks) are kept in
// the types on purpose: dropping them at decode time would silently change
// what a policy means, so they are decoded and the policy engine
// (node/authz) reports on the object's status what it could not enforce.
//
// DeepCopy methods in zz_generated.deepcopy.go are generated with
// controller-gen (see generate.go); the CRD manifests under
// charts/ambit/crds/ come from the same markers (go generate ./node/apis/...).
//
// +kubebuilder:object:generate=true
// +groupName=security.ambit.dev
package v1alpha1

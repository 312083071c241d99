// Package policies is the node daemon's watch of authorization policies:
// it keeps an authz.Engine fed with every AuthorizationPolicy and
// PeerAuthentication of the cluster (security.ambit.dev/v1alpha1 and,
// with the Istio switch, security.istio.io), closes the live connections a
// change now denies, and reports on each ambit object's status what could
// not be enforced as written.
//
// # Contract
//
//   - Events are debounced (Config.Debounce from the first event of a
//     burst, never postponed by later ones); then the complete object set
//     goes to Engine.Update and Live.Recheck.
//   - Synced returns only after the first apply: before it the engine holds
//     no policy and would allow everything, so nothing may be served
//     inbound. After it, losing the API server keeps the last policies.
//   - An object that does not decode, or has unknown fields, is replaced by
//     a fail-closed stand-in on its scope (logged once, counted, in its
//     status); it never admits more.
//   - Status is patched only when it differs, with the resourceVersion it
//     was computed from, so many nodes do not rewrite each other. Config
//     must be the same on every node.
//
// Design and measurements: docs/policy.md.
package policies

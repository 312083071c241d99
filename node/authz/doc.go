// Package authz is ambit's L4 authorization engine: pure logic that turns
// AuthorizationPolicy and PeerAuthentication objects
// (security.ambit.dev/v1alpha1, the L4 subset of Istio's security API) into
// allow/deny decisions for connections arriving at a local workload. It has
// no informers and no kernel code.
//
// # Contract
//
//   - Engine.Update(policies) compiles a new immutable snapshot and swaps it
//     in atomically; Engine.Decide(Request) reads it without locking and
//     never sees a mix of two snapshots. node/policies calls Update;
//     node/dataplane (inbound.go) builds the Request and calls Decide.
//   - Semantics are Istio's for TCP: DENY before ALLOW, no ALLOW policy
//     allows, L7-only rules dropped from ALLOW and reduced to their L4 part
//     in DENY, plaintext has no principal or namespace, STRICT refuses
//     connections without a verified identity. Nothing the engine cannot
//     enforce widens access; PolicyReport says what was ignored.
//   - Live tracks allowed connections with the Request they were allowed
//     on; Live.Recheck after an Update closes those now denied.
//
// # Pitfalls
//
//   - Principals are compared without "spiffe://".
//   - With Options.TrustDomain set, principals naming the trust domain, an
//     alias or the placeholder "cluster.local" stand for every domain of
//     that set (Istio's trustDomainAliases, trustdomain.go); namespaces and
//     service accounts never look at the trust domain. Without it,
//     principals are compared exactly as written.
//   - Ports are the destination pod's port, never a Service port.
//
// Semantics in full, design and measurements: docs/policy.md.
package authz

// Package tables is the node agent's in-memory view of the cluster and the
// routing of captured connections: which pods exist (and which of them are
// in the mesh), which Services and endpoints they form, and, for a
// connection captured from a pod, where it goes and how (HBONE to the
// endpoint's 15008 expecting its SPIFFE identity, plain passthrough, or
// deny).
//
// It has no client and no goroutines: Tables is the
// cache.ResourceEventHandler of node/watch's informers; tests call the same
// methods with synthetic objects.
//
// # Contract
//
//   - A pod is enrolled when it is eligible (not opted out, not
//     hostNetwork, not ambit itself), running with an address, and its
//     namespace is selected. For pods of this node, Options.OnEnrolment
//     receives Enrol/Release events on every transition, in order, outside
//     the lock; the handler must not block.
//   - Resolve takes the read lock and does not allocate beyond what it
//     returns; routing follows EndpointSlices, not Service targetPorts.
//   - Invalid objects are logged, counted (Stats.BadObjects) and ignored as
//     a whole: the object's previous state stays.
//
// # Pitfalls
//
//   - Strings are interned (package unique) and labels shared between the
//     cache and the tables: never modify a Workload's labels or addresses.
//
// Design and measurements: docs/architecture.md ("The node's view of the
// cluster").
package tables

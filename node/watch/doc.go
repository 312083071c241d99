// Package watch runs the node agent's client-go informers (Pods,
// Namespaces, Services, EndpointSlices) and feeds their events to a
// handler, normally a *tables.Tables, which does all the interpretation.
//
// # Design
//
//   - Memory: Transform, installed on every informer, replaces each object
//     by a copy holding only what ambit reads, before it enters the
//     informer cache. The cache holds every pod of the cluster (routing
//     needs remote endpoints' identities), and managedFields, annotations
//     and container specs are most of a pod's size.
//     Pods become *tables.CompactPod (interned strings, parsed
//     addresses), the others stripped copies of their API type. Measured
//     (go test -run '^$' -bench TransformPodHeap -benchtime=1x
//     ./node/watch), a Deployment pod as the API server returns it: 8,654 B
//     per cached pod untransformed; 1,712 B as a stripped *corev1.Pod (the
//     empty struct alone is 1,240 bytes), which is why pods are not kept
//     as their API type; 330 B as a CompactPod.
//   - Readiness: each informer is synced when its handler registration has
//     received the initial list (not merely when the informer's store
//     has it). Pending names what is not yet synced; WaitForSync blocks
//     on it.
//   - Losing the API server: client-go keeps the caches and the reflectors
//     retry with backoff, so the tables keep serving the last known state.
//     The watch error handler records each failure per informer (and
//     still logs through client-go's default handler), but a reflector
//     retries a refused connection without calling it, so a probe of the
//     API server's /readyz every 5 s also feeds Status.Stale (measured in
//     the cluster: with only the handler, ambit_informer_stale stayed 0
//     for 30 s of API server outage). Nothing is cleared
//     on failure: a stale route is better than none for existing
//     workloads, and the operator sees the staleness.
//   - Nodes are not watched: the only node the agent needs is its own,
//     whose name it is given.
package watch

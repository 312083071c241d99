// Package policies is the node daemon's watch of authorization policies:
// it keeps an authz.Engine fed with every AuthorizationPolicy and
// PeerAuthentication of the cluster (security.ambit.dev/v1alpha1 and,
// with the Istio switch, security.istio.io), closes the live connections a
// change now denies, and reports on each ambit object's status what could
// not be enforced as written.
//
// # Design
//
//   - Client: there is no generated clientset for ambit's CRDs, so the
//     watch uses client-go's dynamic informers (unstructured objects) and
//     converts with runtime.DefaultUnstructuredConverter. The informer
//     caches drop managedFields and annotations (strip).
//   - Apply: any add, update or delete kicks a debouncer; Config.Debounce
//     (100 ms by default) after the first kick of a burst, every object of
//     every store is converted (memoized by UID and resourceVersion, so
//     only changed objects are decoded again), the complete set goes to
//     Engine.Update, then Live.Recheck closes what is now denied, then the
//     statuses are compared. The window is not restarted by later events,
//     so churn cannot postpone enforcement: a change reaches Live.Recheck
//     within Debounce plus the apply time, or twice Debounce plus it when
//     it lands during an apply. An update that leaves metadata.generation
//     unchanged (a status write, typically another node's) does not
//     re-apply; it only re-compares statuses.
//   - Readiness: the first apply waits for every informer's initial list
//     (and, with Istio, a successful discovery and those informers' lists):
//     until then the Engine holds no policy and would allow everything, so
//     the daemon must not serve inbound connections before Synced. After
//     the first apply, losing the API server keeps the last known policies
//     in force; Status.Stale says so.
//   - Bad input: an object that does not decode (a field of the wrong
//     type) or carries fields ambit does not know is never ignored in a way
//     that admits more: it is replaced by a fail-closed stand-in on its
//     scope (readable selector, else its namespace; the mesh in the root
//     namespace). Malformed ALLOW: an ALLOW policy admitting nothing;
//     malformed DENY or unreadable action: DENY of everything; malformed
//     AUDIT: nothing; unknown fields in a DENY (or CUSTOM) policy: the
//     decoded policy, which denies at least as much; PeerAuthentication:
//     STRICT. Each such object version is logged once, counted
//     (Stats.ConversionFailures), listed in Status.Malformed and, for ambit
//     objects, written to its status (Accepted=False, reason Malformed or
//     UnknownFields). With structural CRD schemas this only happens with
//     Istio's objects or a CRD installed without its schema. This follows
//     Istio's own rule (a DENY policy that cannot be built becomes deny-all;
//     an ALLOW rule that cannot be built is dropped).
//   - Istio switch: discovery runs at Run and then every IstioRecheck (a
//     minute) until both resources are found, so installing Istio's CRDs
//     later is picked up without a restart; per resource v1 is preferred to
//     v1beta1. Istio objects go to the Engine named
//     "istio:<name>" (IstioNamePrefix), so an Istio and an ambit policy
//     of the same namespace/name are both enforced. Their status is never
//     written (it belongs to istiod and has another shape; it is not even
//     decoded).
//   - Status with many node daemons: every node computes the same
//     conditions, since a report depends only on the objects and the
//     Engine's root namespace (all nodes run the same DaemonSet config).
//     A node patches an object only when its conditions or
//     observedGeneration differ from what is stored, keeping the stored
//     LastTransitionTime when a condition's status did not change, so once
//     one node has written, the write is a no-op everywhere else. The patch
//     carries the resourceVersion and UID it was computed from: a node that
//     lost the race gets a conflict (counted, not retried), sees the
//     winner's write through its watch and finds nothing to do. Each status
//     pass is delayed by a random time below StatusJitter (1 s), so of N
//     nodes typically one writes and the others compare; enforcement is
//     never delayed by it. Config must be the same on every node: nodes
//     that disagree on the root namespace or the Istio switch would compute
//     different reports for the objects concerned and rewrite each other.
//
// # Measurements
//
//	go test -run '^$' -bench Apply -benchmem -count 3 ./node/policies/
//
// on the 2-core build machine under load (load average 5-8, so upper
// bounds): one apply with 1,000 AuthorizationPolicies and 100
// PeerAuthentications in the stores, one policy changed, takes 3.3-6.6 ms
// and allocates 1.6 MB. The first version took 10.4 ms: sorting the
// objects called Unstructured.GetNamespace/GetName (nested map lookups)
// in every comparison; apply now reads each object's metadata once.
// Engine.Update is a fifth of what remains; the rest is listing the
// stores, reading metadata and building the memo. An event thus reaches
// Live.Recheck in about Debounce + 5 ms with a thousand policies, well
// inside the one-second target. Conversion is memoized, so an event
// decodes one object.
package policies

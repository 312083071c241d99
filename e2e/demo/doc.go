// Package demo holds the narrated scenarios behind `make demo`.
//
// Local (this file's Run) is the tier that needs nothing but this machine:
// a real built-in CA over HTTPS, the node's certificate manager obtaining
// SPIFFE certificates for two workloads, an AuthorizationPolicy evaluated by
// the policy engine, and a connection carried between two HBONE endpoints,
// with both identities printed from each endpoint's access log. The cluster
// tier (helm install, label a namespace, capture on the wire) grows here as
// the chart lands.
package demo

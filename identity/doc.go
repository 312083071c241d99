// Package identity holds ambit's workload identities and the certificates
// that prove them: the small source interfaces the tunnel consumes, the
// certificate manager that obtains certificates on behalf of local pods, the
// clients of certificate authorities, and the built-in CA server.
//
// Identities are go-spiffe spiffeid.ID values of the form
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>; nothing in
// ambit splits SPIFFE IDs as strings.
//
// This package imports neither Kubernetes nor kernel packages: whatever it
// needs from a cluster (token review, pod lookup) arrives through interfaces.
package identity

// Package ca is ambit's built-in certificate authority (`ambit ca`) and its
// client.
//
// The server signs a workload certificate only for the node daemon of the
// node where that workload runs. Each POST /v1/sign (wire format in
// wire.go) goes through, in order: a bearer token, first pre-checked
// locally (a JWT of at most 8 KiB, not expired, one of TokenAudiences,
// TokenSubject if set) with the body's and CSR's sizes, then authenticated
// by an injected Authenticator (TokenReview in node/kubeca) under Admission
// (results cached by token hash, one review per token in flight, a bucket
// per source address, a cap on reviews in flight with slots reserved for
// known node tokens: docs/identity.md); the caller's service
// account must be the configured ambit node account and the token must be
// bound to a node; a per-node token bucket; the requested SPIFFE ID must be
// a workload identity (/ns/<ns>/sa/<sa>) of the CA's trust domain; the CSR
// must pass CheckCSR (bounded size, valid signature, exactly one URI SAN
// equal to the requested ID, no other SANs, ECDSA P-256 or RSA >= 2048, no
// CA request); and an injected PodLocator must know a Pending or Running pod
// of that namespace and service account on the caller's node. Any failure
// is answered with a Reason (status, JSON body), counted, and logged in one
// "ca: denied" line; nothing is signed. Each issuance is logged in one
// "ca: issued" line with identity, node, serial and expiry.
//
// The Issuer signs with an intermediate from the operator's PKI (files:
// chain and key) or, for development only, a self-generated root. Leaves
// carry only the URI SAN, a random 128-bit serial, NotBefore back-dated for
// clock skew, key usage digitalSignature and EKU server+client auth; they
// are never CAs and never outlive the signing certificate. The chain sent
// back is leaf + intermediates, never a self-signed root: the node
// verifies against its own trust bundle.
//
// The CA's TLS serving certificate is minted by the Issuer itself for a
// SPIFFE ID (ServingTLS), so the node's Client verifies the CA against the
// same trust bundle as every workload certificate, and root rotation needs
// no second trust path; a CA fronted by a web-PKI certificate can be
// verified with ClientConfig.RootCAs instead. The Client re-reads the
// projected token file on every request (the kubelet rotates it).
//
// Measured on the 2-core dev machine shared with other builds (load ~4-5),
// go test -run '^$' -bench . -count 3 ./identity/ca/:
// BenchmarkIssue (signing alone, P-256 intermediate) 240-380 µs/op,
// 2,600-4,600 certs/s; BenchmarkSignHTTPS (the whole request over HTTPS,
// client and server sharing the two cores, CSR signature verified)
// 1,150-2,750 certs/s, above the 1,000/s target even under that load;
// BenchmarkPrefetchOverHTTPS (new identity: key generation, CSR, HTTPS round
// trip, chain check) p50 1.3-1.4 ms, p99 3.2-6.0 ms, within the 10 ms target.
//
// The package imports no Kubernetes code: the cluster-facing Authenticator
// and PodLocator live in node/kubeca.
package ca

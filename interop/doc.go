// Package interop tests ambit's HBONE client and server against an
// independent implementation: Istio's Go package istio.io/istio/pkg/hbone
// (its CONNECT dialer on x/net/http2's Transport and its server on
// net/http). It is a module of its own so that Istio's dependency graph
// stays out of ambit's; `make test` runs it (make test-interop). What is
// compared and what each side does differently is in docs/hbone.md.
package interop

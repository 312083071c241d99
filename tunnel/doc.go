// Package tunnel implements HBONE, the tunnel protocol of Istio's ambient
// mesh that ambit speaks: mutual TLS (SPIFFE workload certificates, ALPN
// h2) carrying HTTP/2, one CONNECT stream per proxied TCP connection.
//
// Server terminates tunnels for destination workloads and splices each
// authorized CONNECT stream to the application; Client opens CONNECT
// streams through a pool of tunnels. Both are built on a purpose-built
// HTTP/2 CONNECT endpoint over golang.org/x/net/http2's Framer (see
// "Design" below for why).
package tunnel

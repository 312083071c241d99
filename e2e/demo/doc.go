// Package demo holds the narrated scenarios behind `make demo` and
// `make demo-local`.
//
// Cluster (cluster.go, `sudo make demo`) is the newcomer's tour on a real
// two-node Kubernetes cluster that e2e/cluster starts on this machine. It
// narrates scenarios 1, 2, 5 and 4 of the end-to-end suite (e2e/mesh_test.go)
// as a user would run them: `helm install` of charts/ambit, the echo app
// deployed with `kubectl apply -f -`, `kubectl label namespace shop
// ambit.dev/mesh=enabled`, echo clients started with `kubectl run` and read
// with `kubectl logs`, a metrics scrape of each daemon, and
// AuthorizationPolicies applied with `kubectl apply -f -`. Every command is
// printed as typed and run as printed (kubectl and helm from bin/, the YAML on
// kubectl's standard input). What it reports was observed, and the demo fails
// when it is not: tcpdump on node-1 (cni0 and eth0) shows only TCP to port
// 15008 between the clients and the servers and never the app's marker;
// both daemons' JSON access logs carry source_principal and
// destination_principal; /metrics counts ambit_tcp_connections_opened_total
// with both principals; a DENY by principal closes a live connection and
// refuses new ones; an ALLOW by namespace and port lets shop in and keeps
// another meshed namespace out. Everything is removed afterwards (Stop and
// Leftovers) unless ClusterOptions.Keep, which prints the KUBECONFIG and the
// teardown command. Measured on the 2-core machine with the cluster binaries
// built: images 5-10 s, cluster start 14-18 s, the whole demo about a minute.
//
// Local (local.go, `make demo-local`) needs nothing but this process: a real
// built-in CA over HTTPS, the node's certificate manager obtaining SPIFFE
// certificates for two workloads, an AuthorizationPolicy evaluated by the
// policy engine, and a connection carried between two HBONE endpoints, with
// both identities printed from each endpoint's access log.
package demo

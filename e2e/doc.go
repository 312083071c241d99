// Package e2e holds ambit's end-to-end scenarios, each a Go test against a
// real Kubernetes cluster that the harness (package
// github.com/ambit-mesh/ambit/e2e/cluster) builds and starts on this machine.
//
// # Running
//
// As root, once per machine (cached afterwards):
//
//	e2e/hack/install-deps.sh   # containerd, runc, iproute2, iptables, tcpdump (apt)
//	e2e/hack/build-bins.sh     # kube-apiserver, kube-controller-manager, kube-scheduler,
//	                           # kubelet, kube-proxy v1.34.3; etcd v3.5.35; CNI bridge,
//	                           # host-local, loopback v1.9.1; kubectl v1.34.3, helm v3.22.0,
//	                           # coredns v1.14.7
//	                           # -> bin/ (cold: 15 min on 2 shared cores, measured with empty
//	                           # module and build caches; cached: 0.1 s)
//
// then
//
//	go test ./e2e/ -run TestClusterSmoke -v   # the harness itself
//	go test ./e2e/ -run TestMesh -v           # issue 6's scenarios 1-8 with the chart and daemons (about 5 min)
//	go test ./e2e/ -run '^$' -bench Mesh -benchtime 1x -v   # speed figures (make bench-e2e)
//
// TestMesh installs the chart with the values this machine's emulated nodes
// need (mesh_test.go install: the cgroup v2 mount, containerd's netns
// directory, each node's netns file from Options.NodeNetnsFile, a node-private
// /var/run/ambit) and runs the scenarios in order, each a subtest building on
// the previous one's state (see its doc comment).
//
// Without root or without the binaries the scenarios skip with the reason;
// with AMBIT_E2E_REQUIRE=1 (CI) they fail instead, so CI never skips them.
// KEEP=1 leaves the cluster running after the test (its kubeconfig is in the
// test log); the next run, or `go run ./e2e/cmd/e2e-cluster down`, removes it.
// `go run ./e2e/cmd/e2e-cluster up` starts a cluster in the foreground for
// kubectl or helm (Ctrl-C stops it).
//
// # Writing a scenario
//
//	opts := cluster.Options{Images: []string{tar}} // two nodes by default
//	cluster.SkipIfUnavailable(t, opts)
//	c, err := cluster.Start(ctx, t, opts) // stopped and cleaned by t.Cleanup
//	cs := c.Clientset()                   // admin client; c.Kubeconfig for kubectl/helm
//	pods, err := c.WaitPods(ctx, ns, "app=echo", 2, cluster.PodReady)
//	logs, err := c.PodLogs(ctx, ns, pod, "client")
//	out, err := c.Nodes[0].Exec(ctx, "ip", "addr") // in the node's namespaces
//
// Images come from static Go binaries (cluster.BuildGoImage, or
// cluster.WriteImageTar for several files) and are imported into every node;
// pods use imagePullPolicy: Never. The echo app (e2e/apps/echo) is a TCP
// server that answers each line with its name, the peer address it sees and
// the line, and a client that sends a marker string and prints the answers.
//
// Pod-to-pod traffic is routed without NAT (the server sees the client pod's
// address); a Service ClusterIP works through kube-proxy. Node addresses are
// 172.31.250.11 and .12 on the host bridge ambite2e0 (the API server is on
// 172.31.250.1:6443), pod CIDRs are /24s of 10.250.0.0/16, Service ClusterIPs
// come from 10.251.0.0/16.
package e2e

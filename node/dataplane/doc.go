// Package dataplane wires one enrolled pod's captured traffic to the tunnel:
// the node daemon's three data paths (docs/architecture.md).
//
//   - Outbound (15001): an app's connect, rewritten by the capture, is
//     accepted on the pod's outbound listener; its original destination
//     (Capture.OriginalDst) is resolved by a Router into a tables.Route.
//     HBONE routes open a CONNECT stream with tunnel.Client from the pod's
//     identity to Route.Tunnel, accepting only Route.Identity; passthrough
//     routes dial Route.Endpoint; deny routes (and the zero Route) are refused
//     with a TCP reset. Both dials use Capture.Dial: a socket created inside
//     the pod's netns with ambit's mark, so the capture lets it out and the
//     peer sees the pod's address.
//
//   - Inbound HBONE (15008): a tunnel.Server serves the pod's identity and
//     addresses; its Authorizer asks the policy engine (Secure, with the
//     verified client principal) and its Dial reaches the app with a marked
//     socket inside the pod netns.
//
//   - Inbound plaintext (15006): the original destination is the accepted
//     socket's local address (sk_lookup keeps it); the policy engine decides
//     with Secure=false, so PeerAuthentication STRICT refuses it and
//     identity-based ALLOW rules cannot admit it; allowed connections are
//     dialed and spliced like HBONE ones.
//
//   - Same node (local.go): under a Node, an HBONE route whose endpoint is
//     another enrolled pod of the node (and whose tunnel is that pod's own
//     15008, with the identity the route expects) skips the tunnel: the
//     destination pod's checks run in process (loop ports, authorization
//     with the source identity as authenticated, so STRICT admits it, live
//     revocation) and its marked dial is spliced to the app's connection.
//     Both sides are reported through the hooks with both identities and a
//     zero TunnelAddr. The bytes never leave the two pods' loopbacks and
//     the daemon; NodeConfig.TunnelSameNode turns it off. Not covered: the
//     Guard's per-identity stream cap (no TLS peer to defend against).
//
// Start runs one pod (Config); Node keeps the pods of a node keyed by pod ID
// for the enrolment layer (Set starts, restarts on a changed identity,
// address or workload, and leaves an unchanged pod alone; Remove; Close).
//
// # Policy changes close live connections
//
// With Config.Live every allowed inbound connection is registered with
// authz.Live together with the authz.Request it was allowed on, so that
// Live.Recheck after an Engine.Update closes those now denied. An HBONE
// stream is registered through tunnel.Decision.Watch: authorizeHBONE
// builds the request, and when the engine allows it the decision carries a
// Watch that registers it; the tunnel server calls Watch right after the
// decision (before dialing the app) and unregisters when the stream ends.
// A Recheck that denies it calls the tunnel's revoke: the stream is reset
// (the source pod's tunnel client sees RST_STREAM and resets the app's
// connection there) and the app's connection in this pod is reset. A
// plaintext connection is registered after its app dial and closed the
// same way, with a reset on both sockets. Both are reported through the
// hooks as tunnel.OutcomeRevoked with the denying policy, Reason "policy
// changed: <the engine's reason>" and an error wrapping tunnel.ErrRevoked,
// and counted in Stats (InboundHBONERevoked, InboundPlainRevoked).
//
// A policy change can land between a connection's decision and its
// registration (for plaintext that window includes the app dial), and the
// Recheck after it would not see the connection. When the Authorizer
// counts generations (*authz.Engine.Generation), the data path reads the
// generation before deciding and, after registering, decides once more if
// it moved, closing the connection at once if it is now denied
// (TestLiveRevokeRace). An HBONE stream denied that way before its 200 is
// refused with 401 (tunnel.OutcomeDenied, error wrapping ErrRevoked).
// TestPodToPod (root, real capture) checks that a live HBONE connection is
// reset within a second of the update while a plaintext one survives. The
// time it logs from Update to the app in the source pod seeing the reset
// was 0.46-0.93 ms over four runs of
//
//	go test -race -run TestPodToPod -v ./node/dataplane
//
// (Recheck resets synchronously; what remains is the RST_STREAM crossing
// the tunnel and the source pod's splice resetting the app's socket).
//
// # Design
//
// One Pod value per enrolled pod, each with its own tunnel.Client and
// tunnel.Server. The client is per pod because its Dial hook must create
// the socket in that pod's netns and tunnel.ClientConfig.Dial is told only the
// source address; a per-pod server lets the Authorizer know the destination
// workload (namespace, labels) without a lookup by address. Both are cheap:
// a Client holds a pool and nothing else, a Server a few maps.
//
// The listeners belong to the capture (redirect.Manager): closing them would
// remove them from the node-wide sockmap and make the pod's traffic fail.
// Stop therefore never closes them; it unblocks Accept with a past deadline
// and clears it on the next Start, so a pod can be stopped and started again
// (e.g. for an identity change) without touching the capture.
//
// Connections carried here but not by the tunnel (passthrough, plaintext
// inbound, refusals) are reported through the same tunnel.Hooks with a
// tunnel.ConnInfo, so node/metrics counts and logs every path alike.
//
// # Cost, measured
//
// BenchmarkPodToPod (bench_linux_test.go, root) runs the app's connection
// through the real capture and two pods' data paths in one process, against
// plain TCP between two unenrolled pods on the same bridge, on the shared
// 2-core machine:
//
//	go test -run '^$' -bench PodToPod -benchtime 1000x -count 2 ./node/dataplane
//
//	                        mesh            direct
//	1 KiB echo, one conn    73-77 us        22 us      (about 3.4x)
//	new conn + 1 B echo     0.83-0.88 ms    0.38-0.39 ms (about 2.2x)
//
// The mesh path has three TCP legs instead of one (app -> 15001 on loopback,
// the tunnel over the veth, 15008's dial -> app on loopback), each crossed
// by a user-space copy, and TLS. For new connections the tunnel is pooled, so
// what is added per connection is the CONNECT stream and the server's marked
// dial to the app; a CPU profile of the connect case shows
// redirect.Manager.Dial's enter-the-netns goroutine (LockOSThread, setns
// there and back) at about 18% of CPU, the largest single item after the
// syscalls themselves: a per-pod dialer thread that stays in the pod netns
// is the first thing to try if connection rate matters.
//
// The package imports no kernel package itself: Capture is an interface that
// *redirect.Manager satisfies, so the wiring is also testable without root.
package dataplane

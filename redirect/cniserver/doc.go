// Package cniserver is the node daemon's side of the ambit-cni protocol
// (package cnimsg): a unix seqpacket socket where the chained CNI plugin
// announces pods before they start.
//
// For each request the server authenticates the peer (SO_PEERCRED: only
// the configured uid, root by default), validates the request and the
// netns descriptor passed with it (a network namespace, the one at the
// request's path, and neither the node's nor the daemon's own), finds the
// host side of the pod's interface, and hands the pod to its Enroller. An
// ADD is acknowledged only when Enroller.Add returns: the daemon's enroller
// (node/enrol) decides, then obtains the pod's certificate, applies capture
// and starts its data path, in that order, before it returns. Any failure
// is answered with an error so the runtime fails the ADD and retries: a pod
// that should be captured never starts uncaptured. DEL releases (unknown
// sandboxes succeed). CHECK verifies.
//
// Pitfall: the netns descriptor in Pod.Netns is closed when the call
// returns; an Enroller that keeps the namespace must duplicate it.
// seqpacket rather than stream: one read is one message, so a frame and
// the descriptor that travels with it can never be split or merged.
package cniserver

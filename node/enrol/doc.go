// Package enrol is the node daemon's control loop for pods: it keeps the
// capture (package redirect), the certificate (identity.Manager.Acquire)
// and the data path (node/dataplane) of every pod of this node equal to
// what the node's view of the cluster (node/tables) says.
//
// A pod is enrolled at its CNI ADD (Enroller.Add, the cniserver.Enroller
// of the daemon's CNI socket: it decides, then obtains the certificate,
// applies capture and starts the data path, in that order, undone if a
// step fails, before the ADD is acknowledged), or while it runs when the tables report it enrolled
// (namespace labelled later: its network namespace is the one its ADD
// reported, or found by its address), or by Recover after a restart.
// Tables events reach the worker (Run) through a Queue.
//
// Contract: a pod stays captured until its network namespace is gone (CNI
// DEL, or the namespace file gone); only unlabelling its namespace or
// opting it out releases it earlier. A pod that is terminating, finished
// or gone from the API keeps its capture, data path and certificate until
// then. Work on one pod is serialized; pods proceed in parallel.
//
// Pitfalls: an ADD waits for the tables and the policies to be synced (a
// data path started earlier would allow what the policies deny); a pod
// unknown to the tables in an enrolled namespace fails its ADD, to be
// retried, rather than start uncaptured. The per-pod records under
// Config.StateDir are what lets a restarted daemon rebuild the data path of
// a pod the API server no longer lists. See docs/lifecycle.md.
package enrol

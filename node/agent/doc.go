// Package agent is the node daemon's wiring (Run): the watch and the
// tables, metrics, the certificate manager, policies, capture and the data
// path, the enrolment of pods (package node/enrol), the CNI socket and its
// installation, readiness, admin, and the handover to a successor.
//
// Contract: a pod in the mesh stays captured until its network namespace
// is gone (CNI DEL, or the namespace file gone); only unlabelling its
// namespace or opting it out releases it earlier. A stopping daemon whose
// DaemonSet still exists serves until its successor's takeover marker
// appears (Options.HandoverTimeout), then drains, and keeps the CNI entry;
// one whose DaemonSet is gone removes the entry. See docs/lifecycle.md.
//
// Pitfall: capture outlives the process (pinned in the kernel); never
// remove it on shutdown, or pods would send in the clear.
package agent

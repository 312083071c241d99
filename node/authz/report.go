package authz

import (
	"strings"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition reasons written to a policy's status.
const (
	ReasonAccepted             = "Accepted"
	ReasonTargetRefUnsupported = "TargetRefUnsupported"
	ReasonUnsupportedAction    = "UnsupportedAction"
	ReasonSuperseded           = "Superseded"
	ReasonInvalidMode          = "InvalidMode"
	ReasonFullyEnforced        = "FullyEnforced"
	ReasonPartiallyEnforced    = "PartiallyEnforced"
)

// PolicyReport is what compiling one policy found: whether it is in force
// as written and what was dropped, reduced or ignored. The node agent turns
// it into status conditions with Conditions.
type PolicyReport struct {
	Kind       string // "AuthorizationPolicy" or "PeerAuthentication"
	Namespace  string
	Name       string
	Generation int64
	// Accepted is false when the policy is not in force as written (it
	// applies to nothing, is enforced in a fail-closed form, or lost to an
	// older policy of the same scope). Reason and Message say why.
	Accepted bool
	Reason   string
	Message  string
	// Issues lists, one line each, the parts of the policy that were not
	// enforced as written and how they were handled.
	Issues []string
	// Warnings are enforced as written but probably not what was meant
	// (e.g. a principal written with "spiffe://", which never matches).
	Warnings []string
}

// Key is "namespace/name".
func (r PolicyReport) Key() string { return r.Namespace + "/" + r.Name }

// Conditions renders the report as the Accepted and PartiallyEnforced
// status conditions. now is the transition time to stamp (the caller owns
// the clock).
func (r PolicyReport) Conditions(now metav1.Time) []metav1.Condition {
	acc := metav1.Condition{
		Type:               v1alpha1.ConditionAccepted,
		Status:             metav1.ConditionTrue,
		ObservedGeneration: r.Generation,
		LastTransitionTime: now,
		Reason:             ReasonAccepted,
		Message:            "in force",
	}
	if !r.Accepted {
		acc.Status = metav1.ConditionFalse
		acc.Reason = r.Reason
		acc.Message = r.Message
	}
	part := metav1.Condition{
		Type:               v1alpha1.ConditionPartiallyEnforced,
		Status:             metav1.ConditionFalse,
		ObservedGeneration: r.Generation,
		LastTransitionTime: now,
		Reason:             ReasonFullyEnforced,
		Message:            "every rule is enforced as written",
	}
	if len(r.Issues) > 0 || len(r.Warnings) > 0 {
		lines := append(append([]string(nil), r.Issues...), r.Warnings...)
		part.Message = truncate(strings.Join(lines, "; "), 32*1024)
		if len(r.Issues) > 0 {
			part.Status = metav1.ConditionTrue
			part.Reason = ReasonPartiallyEnforced
		}
	}
	return []metav1.Condition{acc, part}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

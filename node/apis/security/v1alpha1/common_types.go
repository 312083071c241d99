package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// WorkloadSelector narrows a policy to the pods whose labels contain every
// pair in MatchLabels. A selector in the mesh root namespace selects pods in
// every namespace; elsewhere only pods of the policy's own namespace.
type WorkloadSelector struct {
	// MatchLabels: every key/value pair must be present on the pod.
	// Empty or absent means "all pods in scope".
	// +optional
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// PolicyTargetReference names a Kubernetes resource a policy is attached to.
// ambit enforces policies on workloads only: a policy that sets targetRef or
// targetRefs applies to no pod, and its status says so. The fields exist so
// that such a policy keeps its meaning (instead of the API server pruning the
// field and turning it into a namespace-wide policy).
type PolicyTargetReference struct {
	// +optional
	Group string `json:"group,omitempty"`
	// +optional
	Kind string `json:"kind,omitempty"`
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// PolicyStatus is what the node agent reports about a policy: whether it
// was accepted and what of it could not be enforced at L4.
type PolicyStatus struct {
	// ObservedGeneration is the metadata.generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: "Accepted" (the policy is in force) and "PartiallyEnforced"
	// (parts of it were dropped or reduced; the message says which).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types written to PolicyStatus.
const (
	ConditionAccepted          = "Accepted"
	ConditionPartiallyEnforced = "PartiallyEnforced"
)

package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Action is what an AuthorizationPolicy does with a connection its rules
// match.
// +kubebuilder:validation:Enum=ALLOW;DENY;AUDIT
type Action string

// Actions. CUSTOM (external authorization) is not supported and is rejected
// by the schema.
const (
	ActionAllow Action = "ALLOW"
	ActionDeny  Action = "DENY"
	ActionAudit Action = "AUDIT"
)

// AuthorizationPolicy controls which connections reach the pods it selects.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=ambit,shortName=ambitap
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`,description="ALLOW, DENY or AUDIT (empty means ALLOW)"
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec AuthorizationPolicySpec `json:"spec,omitempty"`
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// AuthorizationPolicySpec is the body of an AuthorizationPolicy.
//
// +kubebuilder:validation:XValidation:message="only one of selector, targetRef or targetRefs may be set",rule="[has(self.selector), has(self.targetRef), has(self.targetRefs)].filter(x, x).size() <= 1"
type AuthorizationPolicySpec struct {
	// Selector narrows the policy to matching pods. Absent: every pod of the
	// namespace (of the mesh, in the root namespace).
	// +optional
	Selector *WorkloadSelector `json:"selector,omitempty"`

	// TargetRef attaches the policy to a gateway or waypoint; ambit does
	// not enforce such policies (see PolicyTargetReference).
	// +optional
	TargetRef *PolicyTargetReference `json:"targetRef,omitempty"`
	// TargetRefs: as TargetRef.
	// +optional
	TargetRefs []PolicyTargetReference `json:"targetRefs,omitempty"`

	// Action taken when a rule matches. Empty means ALLOW.
	// +optional
	Action Action `json:"action,omitempty"`

	// Rules: the policy matches a connection when at least one rule does.
	// No rules: the policy never matches (for ALLOW this denies everything
	// the policy selects, since an ALLOW policy now applies).
	// +optional
	// +kubebuilder:validation:MaxItems=512
	Rules []Rule `json:"rules,omitempty"`
}

// Rule matches when at least one From, at least one To and every When
// matches. An absent list does not constrain; an empty rule matches every
// connection.
//
// The item limits exist so that the API server can bound the cost of the
// CEL validations; they are far above what real policies use.
type Rule struct {
	// +optional
	// +kubebuilder:validation:MaxItems=512
	From []RuleFrom `json:"from,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=512
	To []RuleTo `json:"to,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=512
	When []Condition `json:"when,omitempty"`
}

// RuleFrom wraps one Source.
type RuleFrom struct {
	// +optional
	Source *Source `json:"source,omitempty"`
}

// RuleTo wraps one Operation.
type RuleTo struct {
	// +optional
	Operation *Operation `json:"operation,omitempty"`
}

// Source describes the peer of a connection. Every field that is set must
// match (AND); within a field any value may match (OR); a not-field matches
// when none of its values does. String values match exactly, by prefix
// ("abc*"), by suffix ("*abc") or by presence ("*": any non-empty value).
//
// +kubebuilder:validation:XValidation:message="serviceAccounts and notServiceAccounts cannot be combined with principals or namespaces",rule="(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) && !has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true"
type Source struct {
	// Principals: verified peer identities written without "spiffe://",
	// e.g. "cluster.local/ns/default/sa/web". Needs mTLS: a plaintext
	// connection has no principal and never matches.
	// +optional
	Principals []string `json:"principals,omitempty"`
	// +optional
	NotPrincipals []string `json:"notPrincipals,omitempty"`

	// RequestPrincipals (JWT) is L7: never enforced by ambit.
	// +optional
	RequestPrincipals []string `json:"requestPrincipals,omitempty"`
	// +optional
	NotRequestPrincipals []string `json:"notRequestPrincipals,omitempty"`

	// Namespaces of the verified peer identity. Needs mTLS.
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
	// +optional
	NotNamespaces []string `json:"notNamespaces,omitempty"`

	// ServiceAccounts of the verified peer identity, "namespace/name", or
	// "name" for the policy's own namespace. Exact values only. Needs mTLS.
	// +optional
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	// +optional
	NotServiceAccounts []string `json:"notServiceAccounts,omitempty"`

	// IPBlocks: source addresses, single IPs or CIDRs.
	// +optional
	IPBlocks []string `json:"ipBlocks,omitempty"`
	// +optional
	NotIPBlocks []string `json:"notIpBlocks,omitempty"`

	// RemoteIPBlocks (X-Forwarded-For / proxy protocol) is L7: never
	// enforced by ambit.
	// +optional
	RemoteIPBlocks []string `json:"remoteIpBlocks,omitempty"`
	// +optional
	NotRemoteIPBlocks []string `json:"notRemoteIpBlocks,omitempty"`
}

// Operation describes the destination side of a connection. Only ports and
// notPorts are L4; hosts, methods and paths are L7 and never enforced.
type Operation struct {
	// Ports: destination ports as the pod sees them (container/target
	// port, not a Service port), as decimal strings.
	// +optional
	Ports []string `json:"ports,omitempty"`
	// +optional
	NotPorts []string `json:"notPorts,omitempty"`

	// +optional
	Hosts []string `json:"hosts,omitempty"`
	// +optional
	NotHosts []string `json:"notHosts,omitempty"`
	// +optional
	Methods []string `json:"methods,omitempty"`
	// +optional
	NotMethods []string `json:"notMethods,omitempty"`
	// +optional
	Paths []string `json:"paths,omitempty"`
	// +optional
	NotPaths []string `json:"notPaths,omitempty"`
}

// Condition is one more requirement on a connection attribute. L4 keys:
// source.ip, source.namespace, source.principal, destination.ip,
// destination.port; any other key is L7 and not enforced.
//
// +kubebuilder:validation:XValidation:message="at least one of values or notValues must be set",rule="has(self.values) || has(self.notValues)"
type Condition struct {
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
	// +optional
	Values []string `json:"values,omitempty"`
	// +optional
	NotValues []string `json:"notValues,omitempty"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicy.
//
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationPolicy `json:"items"`
}

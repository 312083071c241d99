package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MTLSMode is how a workload treats inbound connections without a verified
// peer identity.
// +kubebuilder:validation:Enum=UNSET;DISABLE;PERMISSIVE;STRICT
type MTLSMode string

// mTLS modes.
const (
	// MTLSUnset (or an empty mode) inherits from the enclosing scope
	// (selector < namespace < mesh); the mesh default is PERMISSIVE.
	MTLSUnset MTLSMode = "UNSET"
	// MTLSDisable accepts plaintext. ambit still accepts HBONE, so at the
	// enforcement point it behaves like PERMISSIVE.
	MTLSDisable MTLSMode = "DISABLE"
	// MTLSPermissive accepts both mTLS (HBONE) and plaintext.
	MTLSPermissive MTLSMode = "PERMISSIVE"
	// MTLSStrict refuses every connection without a verified identity.
	MTLSStrict MTLSMode = "STRICT"
)

// PeerAuthentication sets the mTLS mode of the pods it selects.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=ambit,shortName=ambitpa
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mtls.mode`,description="Workload-wide mTLS mode"
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PeerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec PeerAuthenticationSpec `json:"spec,omitempty"`
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// PeerAuthenticationSpec is the body of a PeerAuthentication. Scope: in the
// root namespace without selector, the mesh; in another namespace without
// selector, that namespace; with a selector, the matching pods of the
// policy's namespace. The narrowest scope wins.
//
// +kubebuilder:validation:XValidation:message="portLevelMtls requires a selector with matchLabels",rule="has(self.portLevelMtls) ? (has(self.selector) && has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) : true"
type PeerAuthenticationSpec struct {
	// +optional
	Selector *WorkloadSelector `json:"selector,omitempty"`

	// Mtls: the workload-wide mode. Absent: UNSET (inherit).
	// +optional
	Mtls *MutualTLS `json:"mtls,omitempty"`

	// PortLevelMtls overrides the mode per destination port (the pod's
	// container port, decimal string key 1-65535). Only with a selector.
	// A port listed here does not affect any other port.
	// +optional
	PortLevelMtls map[string]MutualTLS `json:"portLevelMtls,omitempty"`
}

// MutualTLS holds one mode.
type MutualTLS struct {
	// +optional
	Mode MTLSMode `json:"mode,omitempty"`
}

// PeerAuthenticationList is a list of PeerAuthentication.
//
// +kubebuilder:object:root=true
type PeerAuthenticationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PeerAuthentication `json:"items"`
}

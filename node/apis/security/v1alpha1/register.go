package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of ambit's security resources.
const GroupName = "security.ambit.dev"

// SchemeGroupVersion is the group and version of the types in this package.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// Resource names as used in REST paths and informers.
const (
	ResourceAuthorizationPolicies = "authorizationpolicies"
	ResourcePeerAuthentications   = "peerauthentications"
)

var (
	// SchemeBuilder collects the functions that register this package's
	// types into a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme registers AuthorizationPolicy, PeerAuthentication and
	// their lists (and the meta/v1 options types) into a scheme, so that
	// typed and dynamic clients and informers can decode them.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource returns the GroupResource of a resource name in this group.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion,
		&AuthorizationPolicy{},
		&AuthorizationPolicyList{},
		&PeerAuthentication{},
		&PeerAuthenticationList{},
	)
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}

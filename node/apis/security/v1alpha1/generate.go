package v1alpha1

// Regenerate the DeepCopy methods and the CRD manifests with controller-gen
// directory; needs only the Go module proxy):
//
//go:generate go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0 object paths=./...
//go:generate go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0 crd paths=./... output:crd:artifacts:config=../../../../charts/ambit/crds

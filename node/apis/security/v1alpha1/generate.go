package v1alpha1

// Regenerate the DeepCopy methods and the CRD manifests with controller-gen,
// fetched through the Go module proxy (run from this directory, or
// `go generate ./node/apis/...` from the repository root):
//
//go:generate go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0 object paths=./...
//go:generate go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0 crd paths=./... output:crd:artifacts:config=../../../../charts/ambit/crds

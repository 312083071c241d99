package policies

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// IstioNamePrefix is put before the name of every security.istio.io object
// handed to the engine, so that an Istio policy and an ambit policy with the
// same namespace/name are two policies (the engine keys by namespace/name and
// would otherwise keep only one). Decisions name such a policy
// "<namespace>/istio:<name>".
const IstioNamePrefix = "istio:"

// Problem kinds of a conversion, as in conversionProblem.Reason, MalformedObject.Reason and the status
// condition reason.
const (
	// ReasonMalformed: the object could not be decoded into the Go type
	// (a field of the wrong type, for instance).
	ReasonMalformed = "Malformed"
	// ReasonUnknownFields: the object decoded, but carries fields ambit
	// does not know, whose meaning it cannot enforce.
	ReasonUnknownFields = "UnknownFields"
)

// conversionProblem describes an object that could not be taken as written, and what
// is enforced instead.
type conversionProblem struct {
	Reason string // ReasonMalformed or ReasonUnknownFields
	Err    error  // the decoder's error
	// Enforced says what stands in for the object, e.g. "DENY of every
	// connection to the pods of namespace shop" or "nothing".
	Enforced string
}

func (p *conversionProblem) String() string {
	return fmt.Sprintf("%s: %v; enforced instead: %s (fail closed)", p.Reason, p.Err, p.Enforced)
}

// kind tells the two resource kinds apart.
type kind int

const (
	kindAP kind = iota
	kindPA
)

func (k kind) String() string {
	if k == kindPA {
		return "PeerAuthentication"
	}
	return "AuthorizationPolicy"
}

// result is the outcome of converting one object: at most one of ap and pa
// is set (neither when nothing needs enforcing, e.g. a broken AUDIT
// policy); problem is set when the object is not enforced as written.
type result struct {
	ap      *v1alpha1.AuthorizationPolicy
	pa      *v1alpha1.PeerAuthentication
	problem *conversionProblem
}

// specOnly returns the object's top-level map without status: ambit never
// reads a policy's status to decide, and Istio's status has another shape,
// which must not make a valid policy "malformed".
func specOnly(u *unstructured.Unstructured) map[string]any {
	m := make(map[string]any, len(u.Object))
	for k, v := range u.Object {
		if k != "status" {
			m[k] = v
		}
	}
	return m
}

// decode converts with unknown-field detection. unknown reports whether the
// only error was unknown fields (then obj is fully decoded otherwise). A
// decoding error names the first spec field that fails (the converter's
// own message does not say where).
func decode(u *unstructured.Unstructured, obj any, spec func() any) (unknown bool, err error) {
	err = runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(specOnly(u), obj, true)
	if err != nil && runtime.IsStrictDecodingError(err) {
		return true, err
	}
	if err != nil {
		err = locate(u, spec, err)
	}
	return false, err
}

// locate decodes the spec's fields one at a time (in name order) and
// reports the first that fails, prefixed with its name (err if none does).
func locate(u *unstructured.Unstructured, spec func() any, err error) error {
	m, ok := u.Object["spec"].(map[string]any)
	if !ok {
		if _, present := u.Object["spec"]; present {
			return fmt.Errorf("spec is not an object: %w", err)
		}
		return err
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if e := runtime.DefaultUnstructuredConverter.FromUnstructured(map[string]any{k: m[k]}, spec()); e != nil {
			return fmt.Errorf("spec.%s: %w", k, e)
		}
	}
	return err
}

// metaOnly fills what can always be read from an object (the API server
// validates metadata), for the stand-in of a malformed object.
func metaOnly(u *unstructured.Unstructured, m metav1.Object) {
	m.SetNamespace(u.GetNamespace())
	m.SetName(u.GetName())
	m.SetUID(u.GetUID())
	m.SetResourceVersion(u.GetResourceVersion())
	m.SetGeneration(u.GetGeneration())
}

// readableSelector returns spec.selector.matchLabels when it can be read
// as a string map, else nil (the whole namespace, a wider scope: for a
// stand-in that only restricts, wider is stricter).
func readableSelector(u *unstructured.Unstructured) *v1alpha1.WorkloadSelector {
	ml, found, err := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
	if err != nil || !found || len(ml) == 0 {
		return nil
	}
	return &v1alpha1.WorkloadSelector{MatchLabels: ml}
}

func scopeText(ns string, sel *v1alpha1.WorkloadSelector, root string) string {
	where := "the pods of namespace " + ns
	switch {
	case root == "":
		where += " (of the mesh, if it is the root namespace)"
	case ns == root:
		where = "every pod of the mesh"
	}
	if sel != nil {
		keys := make([]string, 0, len(sel.MatchLabels))
		for _, k := range sortedKeys(sel.MatchLabels) {
			keys = append(keys, k+"="+sel.MatchLabels[k])
		}
		return where + " labelled " + strings.Join(keys, ",")
	}
	return where
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// convertAP converts an AuthorizationPolicy of either API group. What cannot
// be taken as written is replaced by a stand-in that never admits more than
// the object could have:
//
//   - malformed, action readable as ALLOW (or absent): an ALLOW policy with
//     no rules on the object's scope ("allow nothing": an ALLOW policy now
//     applies, and this one admits nothing);
//   - malformed, action AUDIT: nothing (AUDIT never changes a decision);
//   - malformed, any other or unreadable action: DENY of every connection
//     on the object's scope;
//   - unknown fields, action ALLOW or AUDIT: as malformed (the unknown
//     field may narrow what a rule admits);
//   - unknown fields, any other action: the decoded policy (enforced as
//     DENY by the engine; dropping a constraint from a DENY rule only makes
//     it deny more), reported.
//
// The scope is spec.selector.matchLabels when it is readable, otherwise the
// whole namespace (mesh, in the root namespace).
func convertAP(u *unstructured.Unstructured, istio bool, root string) result {
	ap := &v1alpha1.AuthorizationPolicy{}
	unknown, err := decode(u, ap, func() any { return &v1alpha1.AuthorizationPolicySpec{} })
	if err == nil {
		rename(ap, istio)
		return result{ap: ap}
	}
	action, found, aerr := unstructured.NestedString(u.Object, "spec", "action")
	switch {
	case aerr != nil:
		action = "?"
	case !found:
		action = string(v1alpha1.ActionAllow)
	}
	if unknown && action != string(v1alpha1.ActionAllow) && action != string(v1alpha1.ActionAudit) && action != "" {
		rename(ap, istio)
		return result{ap: ap, problem: &conversionProblem{Reason: ReasonUnknownFields, Err: err,
			Enforced: "the policy without the unknown fields, as DENY (denies more than written)"}}
	}
	reason := ReasonMalformed
	if unknown {
		reason = ReasonUnknownFields
	}
	stand := &v1alpha1.AuthorizationPolicy{}
	metaOnly(u, stand)
	stand.Spec.Selector = readableSelector(u)
	scope := scopeText(u.GetNamespace(), stand.Spec.Selector, root)
	p := &conversionProblem{Reason: reason, Err: err}
	switch action {
	case "", string(v1alpha1.ActionAllow):
		stand.Spec.Action = v1alpha1.ActionAllow
		p.Enforced = "an ALLOW policy admitting nothing, on " + scope
	case string(v1alpha1.ActionAudit):
		p.Enforced = "nothing (an AUDIT policy never changes a decision)"
		return result{problem: p}
	default:
		stand.Spec.Action = v1alpha1.ActionDeny
		stand.Spec.Rules = []v1alpha1.Rule{{}}
		p.Enforced = "DENY of every connection to " + scope
	}
	rename(stand, istio)
	return result{ap: stand, problem: p}
}

// convertPA converts a PeerAuthentication of either API group. Malformed or
// with unknown fields: a STRICT stand-in on the object's scope (readable
// selector, else the namespace; the mesh in the root namespace).
func convertPA(u *unstructured.Unstructured, istio bool, root string) result {
	pa := &v1alpha1.PeerAuthentication{}
	unknown, err := decode(u, pa, func() any { return &v1alpha1.PeerAuthenticationSpec{} })
	if err == nil {
		rename(pa, istio)
		return result{pa: pa}
	}
	reason := ReasonMalformed
	if unknown {
		reason = ReasonUnknownFields
	}
	stand := &v1alpha1.PeerAuthentication{}
	metaOnly(u, stand)
	stand.CreationTimestamp = u.GetCreationTimestamp()
	stand.Spec.Selector = readableSelector(u)
	stand.Spec.Mtls = &v1alpha1.MutualTLS{Mode: v1alpha1.MTLSStrict}
	rename(stand, istio)
	return result{pa: stand, problem: &conversionProblem{Reason: reason, Err: err,
		Enforced: "mTLS STRICT on " + scopeText(u.GetNamespace(), stand.Spec.Selector, root)}}
}

func rename(o interface {
	GetName() string
	SetName(string)
}, istio bool) {
	if istio {
		o.SetName(IstioNamePrefix + o.GetName())
	}
}

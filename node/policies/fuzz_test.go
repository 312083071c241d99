package policies

import (
	"testing"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// FuzzConvert: any JSON object as spec converts without panicking; a
// problem-free result is the decoded object; a stand-in is never an
// AUDIT policy, never a targetRef policy (which would apply to nothing),
// and a PeerAuthentication stand-in is STRICT.
func FuzzConvert(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"action":"DENY","rules":[{}]}`, `{"rules":"x"}`, `{"action":7}`,
		`{"selector":{"matchLabels":{"a":"b"}},"rules":[{"from":[{"source":{"principals":["*"],"x":1}}]}]}`,
		`{"mtls":{"mode":"STRICT"},"portLevelMtls":{"80":{"mode":"DISABLE"}}}`, `{"mtls":[1]}`,
		`{"targetRef":{"kind":"Gateway"},"rules":5}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, spec []byte) {
		u := &unstructured.Unstructured{}
		doc := `{"apiVersion":"security.ambit.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"namespace":"shop","name":"p"},"spec":` + string(spec) + `}`
		if err := u.UnmarshalJSON([]byte(doc)); err != nil {
			return
		}
		for _, istio := range []bool{false, true} {
			ap := convertAP(u, istio, root)
			if ap.pa != nil {
				t.Fatal("AuthorizationPolicy became a PeerAuthentication")
			}
			if ap.problem == nil && ap.ap == nil {
				t.Fatal("no policy and no problem")
			}
			if ap.problem != nil && ap.problem.Reason == ReasonMalformed && ap.ap != nil {
				if ap.ap.Spec.Action == v1alpha1.ActionAudit || ap.ap.Spec.TargetRef != nil || len(ap.ap.Spec.TargetRefs) > 0 {
					t.Fatalf("stand-in %+v", ap.ap.Spec)
				}
			}
			pa := convertPA(u, istio, root)
			if pa.pa == nil {
				t.Fatal("PeerAuthentication: nothing enforced")
			}
			if pa.problem != nil && (pa.pa.Spec.Mtls == nil || pa.pa.Spec.Mtls.Mode != v1alpha1.MTLSStrict || len(pa.pa.Spec.PortLevelMtls) != 0) {
				t.Fatalf("PeerAuthentication stand-in %+v", pa.pa.Spec)
			}
		}
	})
}

package policies

import (
	"fmt"
	"strconv"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// BenchmarkApply: 1,000 AuthorizationPolicies and 100 PeerAuthentications
// in the stores, one policy changed per apply (the common event): the
// whole apply (memoized conversion, Engine.Update, Live.Recheck with no
// connections, status computation).
func BenchmarkApply(b *testing.B) {
	f := newFixture(&testing.T{}, false)
	f.w.cfg.WriteStatus = false
	var first *unstructured.Unstructured
	for i := range 1000 {
		u := obj(b, fmt.Sprintf(`
apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {namespace: ns-%d, name: p-%d, uid: u-%d, resourceVersion: "1", generation: 1}
spec:
  selector: {matchLabels: {app: web-%d}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/ns-%d/sa/client-*"], namespaces: [shop]}}]
    to: [{operation: {ports: ["8080", "9090"]}}]
    when: [{key: source.ip, values: ["10.0.0.0/8"]}]
`, i%100, i, i, i%10, i%50))
		if i == 0 {
			first = u
		}
		if err := f.stores[resAP].Add(u); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 100 {
		u := obj(b, fmt.Sprintf(`
apiVersion: security.ambit.dev/v1alpha1
kind: PeerAuthentication
metadata: {namespace: ns-%d, name: pa-%d, uid: pa-%d, resourceVersion: "1", generation: 1}
spec: {mtls: {mode: STRICT}}
`, i, i, i))
		if err := f.stores[resPA].Add(u); err != nil {
			b.Fatal(err)
		}
	}
	f.w.apply()
	rv := 1
	for b.Loop() {
		rv++
		u := first.DeepCopy()
		u.SetResourceVersion(strconv.Itoa(rv))
		if err := f.stores[resAP].Update(u); err != nil {
			b.Fatal(err)
		}
		f.w.apply()
	}
}

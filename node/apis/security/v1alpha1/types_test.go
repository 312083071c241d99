package v1alpha1

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"go.yaml.in/yaml/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// An Istio security.istio.io/v1 policy, apiVersion changed, decodes into
// these types with every field landing where Istio puts it.
const istioStylePolicy = `{
  "apiVersion": "security.ambit.dev/v1alpha1",
  "kind": "AuthorizationPolicy",
  "metadata": {"name": "httpbin", "namespace": "foo"},
  "spec": {
    "selector": {"matchLabels": {"app": "httpbin"}},
    "action": "DENY",
    "rules": [{
      "from": [{"source": {
        "principals": ["cluster.local/ns/a/sa/b"], "notPrincipals": ["x*"],
        "requestPrincipals": ["iss/sub"], "notRequestPrincipals": ["*"],
        "namespaces": ["a"], "notNamespaces": ["b"],
        "ipBlocks": ["10.0.0.0/8"], "notIpBlocks": ["10.1.0.0/16"],
        "remoteIpBlocks": ["1.2.3.4"], "notRemoteIpBlocks": ["5.6.7.8"]
      }}, {"source": {"serviceAccounts": ["ns/sa"], "notServiceAccounts": ["other"]}}],
      "to": [{"operation": {
        "ports": ["8080"], "notPorts": ["9090"], "hosts": ["h"], "notHosts": ["nh"],
        "methods": ["GET"], "notMethods": ["POST"], "paths": ["/p"], "notPaths": ["/np"]
      }}],
      "when": [{"key": "source.ip", "values": ["10.0.0.1"], "notValues": ["10.0.0.2"]}]
    }]
  }
}`

func TestAuthorizationPolicyDecodesIstioFieldNames(t *testing.T) {
	var p AuthorizationPolicy
	if err := json.Unmarshal([]byte(istioStylePolicy), &p); err != nil {
		t.Fatal(err)
	}
	want := AuthorizationPolicySpec{
		Selector: &WorkloadSelector{MatchLabels: map[string]string{"app": "httpbin"}},
		Action:   ActionDeny,
		Rules: []Rule{{
			From: []RuleFrom{{Source: &Source{
				Principals: []string{"cluster.local/ns/a/sa/b"}, NotPrincipals: []string{"x*"},
				RequestPrincipals: []string{"iss/sub"}, NotRequestPrincipals: []string{"*"},
				Namespaces: []string{"a"}, NotNamespaces: []string{"b"},
				IPBlocks: []string{"10.0.0.0/8"}, NotIPBlocks: []string{"10.1.0.0/16"},
				RemoteIPBlocks: []string{"1.2.3.4"}, NotRemoteIPBlocks: []string{"5.6.7.8"},
			}}, {Source: &Source{ServiceAccounts: []string{"ns/sa"}, NotServiceAccounts: []string{"other"}}}},
			To: []RuleTo{{Operation: &Operation{
				Ports: []string{"8080"}, NotPorts: []string{"9090"}, Hosts: []string{"h"}, NotHosts: []string{"nh"},
				Methods: []string{"GET"}, NotMethods: []string{"POST"}, Paths: []string{"/p"}, NotPaths: []string{"/np"},
			}}},
			When: []Condition{{Key: "source.ip", Values: []string{"10.0.0.1"}, NotValues: []string{"10.0.0.2"}}},
		}},
	}
	if !reflect.DeepEqual(p.Spec, want) {
		t.Fatalf("decoded spec\n%+v\nwant\n%+v", p.Spec, want)
	}
	// And back: the JSON names survive a round trip.
	out, err := json.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	var again AuthorizationPolicy
	if err := json.Unmarshal(out, &again); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Spec, p.Spec) {
		t.Fatalf("round trip changed the spec: %s", out)
	}
}

func TestPeerAuthenticationDecodesPortLevel(t *testing.T) {
	const in = `{"spec":{"selector":{"matchLabels":{"app":"a"}},"mtls":{"mode":"STRICT"},
	  "portLevelMtls":{"8080":{"mode":"PERMISSIVE"},"9090":{"mode":"DISABLE"}}}}`
	var pa PeerAuthentication
	if err := json.Unmarshal([]byte(in), &pa); err != nil {
		t.Fatal(err)
	}
	if pa.Spec.Mtls == nil || pa.Spec.Mtls.Mode != MTLSStrict {
		t.Fatalf("mtls = %+v", pa.Spec.Mtls)
	}
	if got := pa.Spec.PortLevelMtls["8080"].Mode; got != MTLSPermissive {
		t.Fatalf("port 8080 mode = %q", got)
	}
	if got := pa.Spec.PortLevelMtls["9090"].Mode; got != MTLSDisable {
		t.Fatalf("port 9090 mode = %q", got)
	}
}

func TestAddToSchemeRegistersKinds(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"AuthorizationPolicy", "AuthorizationPolicyList", "PeerAuthentication", "PeerAuthenticationList"} {
		if !s.Recognizes(SchemeGroupVersion.WithKind(kind)) {
			t.Errorf("scheme does not recognize %s", kind)
		}
	}
	obj, err := s.New(SchemeGroupVersion.WithKind("AuthorizationPolicy"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := obj.(*AuthorizationPolicy); !ok {
		t.Fatalf("scheme built %T", obj)
	}
	if got := Resource(ResourcePeerAuthentications).String(); got != "peerauthentications.security.ambit.dev" {
		t.Fatalf("Resource = %q", got)
	}
}

func TestDeepCopyIsIndependent(t *testing.T) {
	var p AuthorizationPolicy
	if err := json.Unmarshal([]byte(istioStylePolicy), &p); err != nil {
		t.Fatal(err)
	}
	p.Status.Conditions = []metav1.Condition{{Type: ConditionAccepted, Status: metav1.ConditionTrue}}
	c := p.DeepCopyObject().(*AuthorizationPolicy)
	if !reflect.DeepEqual(c, &p) {
		t.Fatal("copy differs from original")
	}
	c.Spec.Selector.MatchLabels["app"] = "changed"
	c.Spec.Rules[0].From[0].Source.Principals[0] = "changed"
	c.Spec.Rules[0].To[0].Operation.Ports[0] = "1"
	c.Status.Conditions[0].Status = metav1.ConditionFalse
	if p.Spec.Selector.MatchLabels["app"] != "httpbin" || p.Spec.Rules[0].From[0].Source.Principals[0] != "cluster.local/ns/a/sa/b" ||
		p.Spec.Rules[0].To[0].Operation.Ports[0] != "8080" || p.Status.Conditions[0].Status != metav1.ConditionTrue {
		t.Fatal("mutating the copy changed the original")
	}
	pa := &PeerAuthentication{Spec: PeerAuthenticationSpec{PortLevelMtls: map[string]MutualTLS{"1": {Mode: MTLSStrict}}}}
	pc := pa.DeepCopy()
	pc.Spec.PortLevelMtls["1"] = MutualTLS{Mode: MTLSDisable}
	if pa.Spec.PortLevelMtls["1"].Mode != MTLSStrict {
		t.Fatal("PeerAuthentication copy shares its map")
	}
}

// The committed CRDs are structural: every schema node declares a type (or
// is an int-or-string / preserve-unknown node), and they carry the printer
// columns the README promises.
func TestCRDsAreStructural(t *testing.T) {
	cases := map[string][]string{
		"security.ambit.dev_authorizationpolicies.yaml": {"Action", "Accepted", "Age"},
		"security.ambit.dev_peerauthentications.yaml":   {"Mode", "Accepted", "Age"},
	}
	for file, cols := range cases {
		raw, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "charts", "ambit", "crds", file))
		if err != nil {
			t.Fatal(err)
		}
		var crd map[string]any
		if err := yaml.Unmarshal(raw, &crd); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		spec := crd["spec"].(map[any]any)
		if spec["group"] != GroupName {
			t.Errorf("%s: group %v", file, spec["group"])
		}
		versions := spec["versions"].([]any)
		if len(versions) != 1 {
			t.Fatalf("%s: %d versions", file, len(versions))
		}
		v := versions[0].(map[any]any)
		if v["name"] != "v1alpha1" || v["served"] != true || v["storage"] != true {
			t.Errorf("%s: version %v served %v storage %v", file, v["name"], v["served"], v["storage"])
		}
		var got []string
		for _, c := range v["additionalPrinterColumns"].([]any) {
			got = append(got, c.(map[any]any)["name"].(string))
		}
		if !reflect.DeepEqual(got, cols) {
			t.Errorf("%s: printer columns %v, want %v", file, got, cols)
		}
		if _, ok := v["subresources"].(map[any]any)["status"]; !ok {
			t.Errorf("%s: no status subresource", file)
		}
		schema := v["schema"].(map[any]any)["openAPIV3Schema"].(map[any]any)
		checkStructural(t, file, "", schema)
		checkCELBounded(t, file, "", schema)
	}
}

func checkStructural(t *testing.T, file, path string, node map[any]any) {
	t.Helper()
	if _, ok := node["type"]; !ok && node["x-kubernetes-int-or-string"] != true && node["x-kubernetes-preserve-unknown-fields"] != true {
		t.Errorf("%s: %s has no type", file, path)
	}
	if props, ok := node["properties"].(map[any]any); ok {
		for name, sub := range props {
			checkStructural(t, file, path+"."+name.(string), sub.(map[any]any))
		}
	}
	if items, ok := node["items"].(map[any]any); ok {
		checkStructural(t, file, path+"[]", items)
	}
	if ap, ok := node["additionalProperties"].(map[any]any); ok {
		checkStructural(t, file, path+"{}", ap)
	}
}

// checkCELBounded: an array whose items carry CEL rules must declare
// maxItems, or the API server's cost estimate rejects the CRD (found by
// applying the CRDs to a real kube-apiserver).
func checkCELBounded(t *testing.T, file, path string, node map[any]any) (hasCEL bool) {
	t.Helper()
	_, hasCEL = node["x-kubernetes-validations"]
	if props, ok := node["properties"].(map[any]any); ok {
		for name, sub := range props {
			if checkCELBounded(t, file, path+"."+name.(string), sub.(map[any]any)) {
				hasCEL = true
			}
		}
	}
	if items, ok := node["items"].(map[any]any); ok && checkCELBounded(t, file, path+"[]", items) {
		hasCEL = true
		if _, bounded := node["maxItems"]; !bounded {
			t.Errorf("%s: %s holds CEL rules but has no maxItems", file, path)
		}
	}
	return hasCEL
}

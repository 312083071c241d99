package authz_test

import (
	"fmt"
	"net/netip"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/ambit-mesh/ambit/node/authz"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func Example() {
	e, err := authz.New(authz.Options{RootNamespace: "ambit-system"})
	if err != nil {
		panic(err)
	}
	// Only the frontend may reach the backend, on its container port 8080;
	// the mesh is STRICT.
	e.Update([]*v1alpha1.AuthorizationPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "backend"},
		Spec: v1alpha1.AuthorizationPolicySpec{
			Selector: &v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "backend"}},
			Rules: []v1alpha1.Rule{{
				From: []v1alpha1.RuleFrom{{Source: &v1alpha1.Source{Principals: []string{"cluster.local/ns/shop/sa/frontend"}}}},
				To:   []v1alpha1.RuleTo{{Operation: &v1alpha1.Operation{Ports: []string{"8080"}}}},
			}},
		},
	}}, []*v1alpha1.PeerAuthentication{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: "default"},
		Spec:       v1alpha1.PeerAuthenticationSpec{Mtls: &v1alpha1.MutualTLS{Mode: v1alpha1.MTLSStrict}},
	}})

	backend := authz.Workload{Namespace: "shop", Name: "backend-7d9f-x2", Labels: map[string]string{"app": "backend"}}
	ask := func(principal string, secure bool, port uint16) {
		req := authz.Request{
			Workload:    backend,
			Source:      authz.Source{IP: netip.MustParseAddr("10.244.1.7")},
			Destination: authz.Destination{IP: netip.MustParseAddr("10.244.2.9"), Port: port},
			Secure:      secure,
		}
		if principal != "" {
			req.Source.Principal = spiffeid.RequireFromString(principal)
		}
		fmt.Println(e.Decide(req))
	}
	ask("spiffe://cluster.local/ns/shop/sa/frontend", true, 8080)
	ask("spiffe://cluster.local/ns/shop/sa/frontend", true, 9090)
	ask("spiffe://cluster.local/ns/shop/sa/cart", true, 8080)
	ask("", false, 8080)
	// Output:
	// allow (allowed by an ALLOW policy: shop/backend; mtls STRICT)
	// deny (denied: ALLOW policies apply and none matched; mtls STRICT)
	// deny (denied: ALLOW policies apply and none matched; mtls STRICT)
	// deny (peer authentication STRICT requires a verified peer identity: ambit-system/default; mtls STRICT)
}

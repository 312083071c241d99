package authz

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const rootNS = "ambit-system"

func newEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := New(Options{RootNamespace: rootNS})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type policyOpt func(*v1alpha1.AuthorizationPolicy)

func sel(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func withSelector(kv ...string) policyOpt {
	return func(p *v1alpha1.AuthorizationPolicy) {
		p.Spec.Selector = &v1alpha1.WorkloadSelector{MatchLabels: sel(kv...)}
	}
}

func withAction(a v1alpha1.Action) policyOpt {
	return func(p *v1alpha1.AuthorizationPolicy) { p.Spec.Action = a }
}

func withRules(rs ...v1alpha1.Rule) policyOpt {
	return func(p *v1alpha1.AuthorizationPolicy) { p.Spec.Rules = append(p.Spec.Rules, rs...) }
}

func ap(nsName string, opts ...policyOpt) *v1alpha1.AuthorizationPolicy {
	ns, name := splitKey(nsName)
	p := &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1}}
	for _, o := range opts {
		o(p)
	}
	return p
}

func allow(nsName string, rs ...v1alpha1.Rule) *v1alpha1.AuthorizationPolicy {
	return ap(nsName, withAction(v1alpha1.ActionAllow), withRules(rs...))
}

func deny(nsName string, rs ...v1alpha1.Rule) *v1alpha1.AuthorizationPolicy {
	return ap(nsName, withAction(v1alpha1.ActionDeny), withRules(rs...))
}

func splitKey(k string) (string, string) {
	for i := range k {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	panic("bad key " + k)
}

func from(srcs ...v1alpha1.Source) v1alpha1.Rule {
	r := v1alpha1.Rule{}
	for i := range srcs {
		r.From = append(r.From, v1alpha1.RuleFrom{Source: &srcs[i]})
	}
	return r
}

func to(ops ...v1alpha1.Operation) v1alpha1.Rule {
	r := v1alpha1.Rule{}
	for i := range ops {
		r.To = append(r.To, v1alpha1.RuleTo{Operation: &ops[i]})
	}
	return r
}

func when(cs ...v1alpha1.Condition) v1alpha1.Rule { return v1alpha1.Rule{When: cs} }

// and merges rules' from, to and when into one rule.
func and(rs ...v1alpha1.Rule) v1alpha1.Rule {
	out := v1alpha1.Rule{}
	for _, r := range rs {
		out.From = append(out.From, r.From...)
		out.To = append(out.To, r.To...)
		out.When = append(out.When, r.When...)
	}
	return out
}

func ss(v ...string) []string { return v }

type paOpt func(*v1alpha1.PeerAuthentication)

func paSelector(kv ...string) paOpt {
	return func(p *v1alpha1.PeerAuthentication) {
		p.Spec.Selector = &v1alpha1.WorkloadSelector{MatchLabels: sel(kv...)}
	}
}

func paPorts(kv ...string) paOpt {
	return func(p *v1alpha1.PeerAuthentication) {
		p.Spec.PortLevelMtls = map[string]v1alpha1.MutualTLS{}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Spec.PortLevelMtls[kv[i]] = v1alpha1.MutualTLS{Mode: v1alpha1.MTLSMode(kv[i+1])}
		}
	}
}

func paCreated(minute int) paOpt {
	return func(p *v1alpha1.PeerAuthentication) {
		p.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 0, minute, 0, 0, time.UTC))
	}
}

func pa(nsName string, mode v1alpha1.MTLSMode, opts ...paOpt) *v1alpha1.PeerAuthentication {
	ns, name := splitKey(nsName)
	p := &v1alpha1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if mode != "" {
		p.Spec.Mtls = &v1alpha1.MutualTLS{Mode: mode}
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Requests: by default to pod foo/web-1 (app=web) at 10.0.0.10:8080, from
// 10.1.0.5.
type reqOpt func(*Request)

func mtlsFrom(principal string) reqOpt {
	return func(r *Request) {
		r.Source.Principal = spiffeid.RequireFromString("spiffe://" + principal)
		r.Secure = true
	}
}

func plaintext() reqOpt {
	return func(r *Request) { r.Secure = false; r.Source.Principal = spiffeid.ID{} }
}

func port(p uint16) reqOpt { return func(r *Request) { r.Destination.Port = p } }

func srcIP(ip string) reqOpt { return func(r *Request) { r.Source.IP = netip.MustParseAddr(ip) } }

func dstIP(ip string) reqOpt { return func(r *Request) { r.Destination.IP = netip.MustParseAddr(ip) } }

func pod(ns, name string, kv ...string) reqOpt {
	return func(r *Request) { r.Workload = Workload{Namespace: ns, Name: name, Labels: sel(kv...)} }
}

func request(opts ...reqOpt) Request {
	r := Request{
		Workload:    Workload{Namespace: "foo", Name: "web-1", Labels: sel("app", "web", "version", "v1")},
		Source:      Source{IP: netip.MustParseAddr("10.1.0.5")},
		Destination: Destination{IP: netip.MustParseAddr("10.0.0.10"), Port: 8080},
	}
	for _, o := range opts {
		o(&r)
	}
	return r
}

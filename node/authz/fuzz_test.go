package authz

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
)

// FuzzPattern checks the matcher against its definition and the pattern
// index against the matcher: an index lookup must never miss a match.
func FuzzPattern(f *testing.F) {
	for _, s := range [][2]string{
		{"abc", "abc"}, {"abc*", "abcd"}, {"*abc", "xabc"}, {"*", "x"}, {"*", ""},
		{"a*b", "a*b"}, {"*abc*", "xabc*"}, {"**", "*"}, {"cluster.local/ns/*", "cluster.local/ns/a/sa/b"},
		{"", ""}, {"*/sa/web", "cluster.local/ns/prod/sa/web"}, {"é*", "é"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pat, v string) {
		p, err := parsePattern(pat)
		if pat == "" {
			if err == nil {
				t.Fatal("empty pattern accepted")
			}
			return
		}
		if err != nil {
			t.Fatalf("pattern %q rejected: %v", pat, err)
		}
		if p.String() != pat {
			t.Fatalf("pattern %q prints as %q", pat, p.String())
		}
		// The definition, written out independently.
		var want bool
		switch {
		case v == "":
			want = false
		case pat == "*":
			want = true
		case pat[0] == '*':
			want = len(v) >= len(pat)-1 && v[len(v)-(len(pat)-1):] == pat[1:]
		case pat[len(pat)-1] == '*':
			want = len(v) >= len(pat)-1 && v[:len(pat)-1] == pat[:len(pat)-1]
		default:
			want = v == pat
		}
		if got := p.match(v); got != want {
			t.Fatalf("%q matching %q = %v, want %v", pat, v, got, want)
		}
		var k strKeys
		if !k.add(p) {
			if p.kind != matchPresence {
				t.Fatalf("pattern %q not keyable", pat)
			}
			return
		}
		var x strIndex
		ref := ruleRef{r: &cRule{}}
		x.add(k.compact(), ref)
		found := x.visit(v, func(refs []ruleRef) bool { return len(refs) > 0 && refs[0].r == ref.r })
		if want && !found {
			t.Fatalf("index misses %q for value %q", pat, v)
		}
		if found && !want {
			t.Fatalf("index offers %q for value %q, which it does not match", pat, v)
		}
	})
}

// fuzzRequests cover plaintext and mTLS, several ports and addresses.
func fuzzRequests() []Request {
	var out []Request
	for _, who := range []reqOpt{plaintext(), mtlsFrom(prodWeb), mtlsFrom(devWeb), mtlsFrom("other.td/ns/foo/sa/web"), mtlsFrom("cluster.local/x")} {
		for _, p := range []uint16{0, 80, 8080, 9090, 65535} {
			for _, ip := range []string{"10.1.0.5", "172.16.3.4", "fd00::1"} {
				out = append(out, request(who, port(p), srcIP(ip)))
			}
		}
	}
	return out
}

// reference decides by evaluating every compiled rule of every applicable
// policy, without the index.
func reference(s *snapshot, req Request) (allow bool) {
	a := requestAttrs(&req)
	res := s.pa.resolve(req.Workload.Namespace, req.Workload.Labels)
	if m := res.forPort(a.dstPort); m.mode == v1alpha1.MTLSStrict && a.principal == "" {
		return false
	}
	scopes := []string{rootNS}
	if req.Workload.Namespace != rootNS {
		scopes = append(scopes, req.Workload.Namespace)
	}
	allowPolicies, allowMatch := 0, false
	for _, ns := range scopes {
		ps := s.byNS[ns]
		if ps == nil {
			continue
		}
		for _, p := range ps.all {
			if !p.applies || !selectorMatches(p.selector, req.Workload.Labels) {
				continue
			}
			matched := false
			for _, r := range p.rules {
				if r.match(&a) {
					matched = true
				}
			}
			switch p.action {
			case v1alpha1.ActionDeny:
				if matched {
					return false
				}
			case v1alpha1.ActionAllow:
				allowPolicies++
				allowMatch = allowMatch || matched
			}
		}
	}
	return allowPolicies == 0 || allowMatch
}

// addL7 puts an L7 field into every operation and an L7 condition into
// every rule.
func addL7(spec *v1alpha1.AuthorizationPolicySpec) {
	for i := range spec.Rules {
		r := &spec.Rules[i]
		for j := range r.To {
			if r.To[j].Operation == nil {
				r.To[j].Operation = &v1alpha1.Operation{}
			}
			r.To[j].Operation.Methods = append(r.To[j].Operation.Methods, "GET")
		}
		r.When = append(r.When, v1alpha1.Condition{Key: "request.headers[x-fuzz]", Values: []string{"1"}})
	}
}

// FuzzCompilePolicy feeds untrusted policy specs to the compiler. It must
// not panic, the indexed decision must equal a plain evaluation of every
// rule, and adding L7 parts to the policy must never allow a connection the
// policy without them denies.
func FuzzCompilePolicy(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"rules":[{}]}`,
		`{"action":"DENY","rules":[{}]}`,
		`{"action":"DENY","rules":[{"from":[{"source":{"notPrincipals":["*"]}}]}]}`,
		`{"rules":[{"from":[{"source":{"principals":["cluster.local/ns/prod/sa/web"]}}],"to":[{"operation":{"ports":["8080"]}}]}]}`,
		`{"rules":[{"from":[{"source":{"namespaces":["pr*"],"notIpBlocks":["172.16.0.0/12"]}},{"source":{"ipBlocks":["fd00::/8"]}}]}]}`,
		`{"selector":{"matchLabels":{"app":"web"}},"action":"AUDIT","rules":[{"to":[{"operation":{"notPorts":["80"]}}]}]}`,
		`{"action":"DENY","rules":[{"to":[{"operation":{"methods":["GET"],"ports":["9090"]}}],"when":[{"key":"source.ip","notValues":["10.1.0.5"]}]}]}`,
		`{"rules":[{"from":[{"source":{"serviceAccounts":["web","prod/web"],"notServiceAccounts":["dev/web"]}}]}]}`,
		`{"rules":[{"when":[{"key":"destination.port","values":["8080","x"]},{"key":"source.principal","values":["*/sa/web"]}]}]}`,
		`{"action":"CUSTOM","rules":[{"to":[{"operation":{"paths":["/a"]}}]}]}`,
		`{"targetRefs":[{"kind":"Gateway","name":"g"}],"rules":[{}]}`,
		`{"rules":[{"from":[{"source":{"principals":["*web","cluster.local/ns/dev*"],"ipBlocks":["10.1.0.0/16","bad"]}}]}]}`,
	} {
		f.Add([]byte(s), false)
	}
	reqs := fuzzRequests()
	f.Fuzz(func(t *testing.T, raw []byte, root bool) {
		var spec v1alpha1.AuthorizationPolicySpec
		if err := json.Unmarshal(raw, &spec); err != nil {
			return
		}
		ns := "foo"
		if root {
			ns = rootNS
		}
		e := newEngine(t)
		p := &v1alpha1.AuthorizationPolicy{Spec: spec}
		p.Namespace, p.Name = ns, "fuzz"
		fixed := deny("foo/fixed", src(v1alpha1.Source{Principals: ss("cluster.local/x")}))
		pas := []*v1alpha1.PeerAuthentication{pa(rootNS+"/default", v1alpha1.MTLSPermissive), pa("foo/web", v1alpha1.MTLSUnset, paSelector("app", "web"), paPorts("9090", "STRICT"))}
		reps := e.Update([]*v1alpha1.AuthorizationPolicy{p, fixed}, pas)
		if len(reps) != 4 || reps[0].Key() != ns+"/fuzz" {
			t.Fatalf("reports %+v", reps)
		}
		for _, issue := range reps[0].Issues {
			if !strings.HasPrefix(issue, "rules[") {
				t.Fatalf("issue without a location: %q", issue)
			}
		}
		s := e.snap.Load()
		before := make([]bool, len(reqs))
		for i, req := range reqs {
			d := e.Decide(req)
			before[i] = d.Allow
			if want := reference(s, req); d.Allow != want {
				t.Fatalf("request %d: indexed decision %v, plain evaluation allow=%v (spec %s)", i, d, want, raw)
			}
			if d.Reason == "" || d.MTLSMode == "" || d.MTLSMode == v1alpha1.MTLSUnset {
				t.Fatalf("incomplete decision %+v", d)
			}
		}
		addL7(&p.Spec)
		e.Update([]*v1alpha1.AuthorizationPolicy{p, fixed}, pas)
		for i, req := range reqs {
			if d := e.Decide(req); d.Allow && !before[i] {
				t.Fatalf("request %d: adding L7 parts widened access: %v (spec %s)", i, d, raw)
			}
		}
	})
}

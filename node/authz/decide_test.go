package authz

import (
	"slices"
	"testing"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
)

type decideCase struct {
	name   string
	aps    []*v1alpha1.AuthorizationPolicy
	pas    []*v1alpha1.PeerAuthentication
	req    Request
	allow  bool
	reason string
	policy string   // deciding policy, "" when none
	audit  []string // matching AUDIT policies
	mode   v1alpha1.MTLSMode
}

const (
	prodWeb = "cluster.local/ns/prod/sa/web"
	prodBad = "cluster.local/ns/prod/sa/bad"
	devWeb  = "cluster.local/ns/dev/sa/web"
	fooWeb  = "cluster.local/ns/foo/sa/web"
)

var (
	src = func(s v1alpha1.Source) v1alpha1.Rule { return from(s) }
	op  = func(o v1alpha1.Operation) v1alpha1.Rule { return to(o) }
)

func authzCases() []decideCase {
	return []decideCase{
		// Defaults and empty policies.
		{name: "no policies allows", req: request(plaintext()), allow: true, reason: ReasonNoAllowPolicy},
		{name: "allow-nothing spec {} denies everything in its namespace",
			aps: []*v1alpha1.AuthorizationPolicy{ap("foo/allow-nothing")},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},
		{name: "allow-nothing in another namespace does not apply",
			aps: []*v1alpha1.AuthorizationPolicy{ap("bar/allow-nothing")},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonNoAllowPolicy},
		{name: "allow-nothing with selector applies to matching pods only",
			aps: []*v1alpha1.AuthorizationPolicy{ap("foo/allow-nothing", withSelector("app", "db"))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonNoAllowPolicy},
		{name: "allow-nothing with matching selector denies",
			aps: []*v1alpha1.AuthorizationPolicy{ap("foo/allow-nothing", withSelector("app", "web"))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},
		{name: "ALLOW with one empty rule allows all",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/allow-all", v1alpha1.Rule{})},
			req: request(plaintext()), allow: true, reason: ReasonAllowPolicy, policy: "foo/allow-all"},
		{name: "DENY with no rules matches nothing",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/deny-none")},
			req: request(plaintext()), allow: true, reason: ReasonNoAllowPolicy},
		{name: "DENY with one empty rule denies all",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/deny-all", v1alpha1.Rule{})},
			req: request(mtlsFrom(prodWeb)), reason: ReasonDenyPolicy, policy: "foo/deny-all"},
		{name: "empty action means ALLOW",
			aps: []*v1alpha1.AuthorizationPolicy{ap("foo/p", withRules(src(v1alpha1.Source{Principals: ss(prodWeb)})))},
			req: request(mtlsFrom(devWeb)), reason: ReasonNoAllowMatch},
		{name: "from with an empty source matches everything",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", v1alpha1.Rule{From: []v1alpha1.RuleFrom{{}}})},
			req: request(plaintext()), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},

		// Principals.
		{name: "principals-only ALLOW admits the principal",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss(prodWeb)}))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "principals-only ALLOW refuses another principal",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss(prodWeb)}))},
			req: request(mtlsFrom(prodBad)), reason: ReasonNoAllowMatch},
		{name: "principals-only ALLOW refuses plaintext",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss(prodWeb)}))},
			req: request(plaintext()), reason: ReasonNoAllowMatch},
		{name: "an unverified principal is plaintext",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss(prodWeb)}))},
			req: request(mtlsFrom(prodWeb), func(r *Request) { r.Secure = false }), reason: ReasonNoAllowMatch},
		{name: "principal prefix",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss("cluster.local/ns/prod/*")}))},
			req: request(mtlsFrom(prodBad)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "principal without star is exact, not a prefix",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss("cluster.local/ns/prod")}))},
			req: request(mtlsFrom(prodBad)), reason: ReasonNoAllowMatch},
		{name: "principal suffix",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss("*/sa/web")}))},
			req: request(mtlsFrom(devWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "dots are literal",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss("cluster.loca./ns/prod/sa/web")}))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},
		{name: "a star in the middle is literal",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss("cluster.local/ns/*/sa/web")}))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},
		{name: "presence matches any mTLS peer",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss("*")}))},
			req: request(mtlsFrom(devWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "presence does not match plaintext",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss("*")}))},
			req: request(plaintext()), reason: ReasonNoAllowMatch},
		{name: "principals written with spiffe:// never match",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss("spiffe://" + prodWeb)}))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},
		{name: "DENY notPrincipals * refuses plaintext",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/require-mtls", src(v1alpha1.Source{NotPrincipals: ss("*")}))},
			req: request(plaintext()), reason: ReasonDenyPolicy, policy: "foo/require-mtls"},
		{name: "DENY notPrincipals * lets mTLS through",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/require-mtls", src(v1alpha1.Source{NotPrincipals: ss("*")}))},
			req: request(mtlsFrom(devWeb)), allow: true, reason: ReasonNoAllowPolicy},

		// Namespaces and the not-forms.
		{name: "ALLOW notNamespaces admits plaintext from anywhere (Istio trap)",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{NotNamespaces: ss("prod")}))},
			req: request(plaintext()), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "ALLOW notNamespaces refuses that namespace over mTLS",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{NotNamespaces: ss("prod")}))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},
		{name: "ALLOW notNamespaces admits another namespace",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{NotNamespaces: ss("prod")}))},
			req: request(mtlsFrom(devWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "namespaces AND notPrincipals: good principal",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Namespaces: ss("prod"), NotPrincipals: ss(prodBad)}))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "namespaces AND notPrincipals: excluded principal",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Namespaces: ss("prod"), NotPrincipals: ss(prodBad)}))},
			req: request(mtlsFrom(prodBad)), reason: ReasonNoAllowMatch},
		{name: "namespaces AND notPrincipals: other namespace",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Namespaces: ss("prod"), NotPrincipals: ss(prodBad)}))},
			req: request(mtlsFrom(devWeb)), reason: ReasonNoAllowMatch},
		{name: "namespace prefix pattern",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Namespaces: ss("pro*")}))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "namespaces never match plaintext",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Namespaces: ss("*")}))},
			req: request(plaintext()), reason: ReasonNoAllowMatch},
		{name: "namespace of a non-Kubernetes SPIFFE ID is absent",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Namespaces: ss("prod")}))},
			req: request(mtlsFrom("cluster.local/prod/web")), reason: ReasonNoAllowMatch},
		{name: "two sources are ORed",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", from(v1alpha1.Source{Principals: ss(prodWeb)}, v1alpha1.Source{Namespaces: ss("dev")}))},
			req: request(mtlsFrom(devWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "notPrincipals and notNamespaces both must hold",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{NotPrincipals: ss(prodBad), NotNamespaces: ss("dev")}))},
			req: request(mtlsFrom(devWeb)), reason: ReasonNoAllowMatch},

		// Service accounts.
		{name: "serviceAccounts namespace/name",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{ServiceAccounts: ss("prod/web")}))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "serviceAccounts without namespace means the policy's namespace",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{ServiceAccounts: ss("web")}))},
			req: request(mtlsFrom(fooWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "serviceAccounts without namespace does not match another namespace",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{ServiceAccounts: ss("web")}))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},
		{name: "serviceAccounts ignore the trust domain",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{ServiceAccounts: ss("prod/web")}))},
			req: request(mtlsFrom("other.td/ns/prod/sa/web")), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "notServiceAccounts excludes",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", src(v1alpha1.Source{NotServiceAccounts: ss("prod/web")}))},
			req: request(mtlsFrom(prodBad)), reason: ReasonDenyPolicy, policy: "foo/p"},
		{name: "notServiceAccounts spares the listed account",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", src(v1alpha1.Source{NotServiceAccounts: ss("prod/web")}))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonNoAllowPolicy},
		{name: "serviceAccounts never match plaintext",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{ServiceAccounts: ss("prod/web")}))},
			req: request(plaintext()), reason: ReasonNoAllowMatch},

		// IP blocks.
		{name: "ipBlocks CIDR admits plaintext from inside",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{IPBlocks: ss("10.1.0.0/16")}))},
			req: request(plaintext()), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "ipBlocks single IP",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{IPBlocks: ss("10.1.0.6")}))},
			req: request(plaintext()), reason: ReasonNoAllowMatch},
		{name: "notIpBlocks carves out of ipBlocks",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{IPBlocks: ss("10.0.0.0/8"), NotIPBlocks: ss("10.1.0.0/24")}))},
			req: request(plaintext()), reason: ReasonNoAllowMatch},
		{name: "IPv4-mapped source matches an IPv4 block",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{IPBlocks: ss("10.1.0.5")}))},
			req: request(plaintext(), srcIP("::ffff:10.1.0.5")), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "IPv6 block",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{IPBlocks: ss("fd00::/8")}))},
			req: request(plaintext(), srcIP("fd00::5")), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},

		// Ports: the pod's target port.
		{name: "ports match the target port",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", op(v1alpha1.Operation{Ports: ss("8080")}))},
			req: request(plaintext(), port(8080)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "ports never match the Service port",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", op(v1alpha1.Operation{Ports: ss("80")}))},
			req: request(plaintext(), port(8080)), reason: ReasonNoAllowMatch},
		{name: "notPorts",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", op(v1alpha1.Operation{NotPorts: ss("8080", "8443")}))},
			req: request(mtlsFrom(prodWeb), port(9090)), reason: ReasonDenyPolicy, policy: "foo/p"},
		{name: "notPorts spares listed port",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", op(v1alpha1.Operation{NotPorts: ss("8080", "8443")}))},
			req: request(mtlsFrom(prodWeb), port(8443)), allow: true, reason: ReasonNoAllowPolicy},
		{name: "from AND to: right principal, wrong port",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", and(src(v1alpha1.Source{Principals: ss(prodWeb)}), op(v1alpha1.Operation{Ports: ss("9090")})))},
			req: request(mtlsFrom(prodWeb), port(8080)), reason: ReasonNoAllowMatch},
		{name: "two operations are ORed",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", to(v1alpha1.Operation{Ports: ss("9090")}, v1alpha1.Operation{Ports: ss("8080")}))},
			req: request(plaintext(), port(8080)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},

		// when.
		{name: "when source.ip", aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p",
			when(v1alpha1.Condition{Key: "source.ip", Values: ss("10.1.0.0/16")}))},
			req: request(plaintext()), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "when source.ip notValues", aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p",
			when(v1alpha1.Condition{Key: "source.ip", NotValues: ss("10.1.0.5")}))},
			req: request(plaintext()), reason: ReasonNoAllowMatch},
		{name: "when source.namespace", aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p",
			when(v1alpha1.Condition{Key: "source.namespace", Values: ss("dev")}))},
			req: request(mtlsFrom(devWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "when source.principal notValues", aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p",
			when(v1alpha1.Condition{Key: "source.principal", Values: ss("*"), NotValues: ss(prodBad)}))},
			req: request(mtlsFrom(prodBad)), reason: ReasonNoAllowMatch},
		{name: "when destination.ip", aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p",
			when(v1alpha1.Condition{Key: "destination.ip", Values: ss("10.0.0.0/24")}))},
			req: request(plaintext(), dstIP("10.0.1.10")), reason: ReasonNoAllowMatch},
		{name: "when destination.port", aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p",
			when(v1alpha1.Condition{Key: "destination.port", Values: ss("8080")}))},
			req: request(plaintext()), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "when-keyed rules: principal, namespace, port and IP conditions",
			aps: []*v1alpha1.AuthorizationPolicy{
				allow("foo/a", when(v1alpha1.Condition{Key: "source.principal", Values: ss("*/sa/nope")})),
				allow("foo/b", when(v1alpha1.Condition{Key: "source.namespace", Values: ss("pro*")}, v1alpha1.Condition{Key: "destination.port", Values: ss("1")})),
				allow("foo/c", when(v1alpha1.Condition{Key: "destination.port", Values: ss("9090", "8080")}, v1alpha1.Condition{Key: "source.ip", NotValues: ss("10.1.0.5")})),
				allow("foo/d", when(v1alpha1.Condition{Key: "source.ip", Values: ss("10.1.0.0/16")}))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/d"},
		{name: "all when conditions must hold", aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p",
			when(v1alpha1.Condition{Key: "destination.port", Values: ss("8080")}, v1alpha1.Condition{Key: "source.namespace", Values: ss("prod")}))},
			req: request(mtlsFrom(devWeb)), reason: ReasonNoAllowMatch},

		// L7 in ALLOW: the rule is dropped, the policy still applies.
		{name: "ALLOW with methods drops the rule: deny",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", and(src(v1alpha1.Source{Principals: ss(prodWeb)}), op(v1alpha1.Operation{Methods: ss("GET")})))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},
		{name: "ALLOW with an L7 when key drops the rule",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", when(v1alpha1.Condition{Key: "request.headers[x]", Values: ss("y")}))},
			req: request(plaintext()), reason: ReasonNoAllowMatch},
		{name: "ALLOW with requestPrincipals drops the rule",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss(prodWeb), RequestPrincipals: ss("*")}))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},
		{name: "ALLOW keeps its L4 rules next to a dropped one",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", op(v1alpha1.Operation{Paths: ss("/admin")}), src(v1alpha1.Source{Principals: ss(prodWeb)}))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/p"},
		{name: "ALLOW with a bad CIDR drops the rule",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{IPBlocks: ss("10.1.0.0/99")}))},
			req: request(plaintext()), reason: ReasonNoAllowMatch},

		// L7 in DENY: reduced to the L4 part, stricter.
		{name: "DENY methods+ports denies every connection to the port",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", op(v1alpha1.Operation{Methods: ss("POST"), Ports: ss("8080")}))},
			req: request(mtlsFrom(prodWeb), port(8080)), reason: ReasonDenyPolicy, policy: "foo/p"},
		{name: "DENY methods+ports leaves other ports alone",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", op(v1alpha1.Operation{Methods: ss("POST"), Ports: ss("8080")}))},
			req: request(mtlsFrom(prodWeb), port(9090)), allow: true, reason: ReasonNoAllowPolicy},
		{name: "DENY with only paths denies everything",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", op(v1alpha1.Operation{Paths: ss("/admin")}))},
			req: request(mtlsFrom(prodWeb), port(1)), reason: ReasonDenyPolicy, policy: "foo/p"},
		{name: "DENY with an L7 when key keeps its L4 part",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", and(src(v1alpha1.Source{Namespaces: ss("dev")}), when(v1alpha1.Condition{Key: "request.auth.claims[iss]", Values: ss("x")})))},
			req: request(mtlsFrom(devWeb)), reason: ReasonDenyPolicy, policy: "foo/p"},
		{name: "DENY with an L7 when key: L4 part still has to match",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", and(src(v1alpha1.Source{Namespaces: ss("dev")}), when(v1alpha1.Condition{Key: "request.auth.claims[iss]", Values: ss("x")})))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonNoAllowPolicy},
		{name: "DENY with a bad notIpBlocks value drops that field (denies more)",
			aps: []*v1alpha1.AuthorizationPolicy{deny("foo/p", src(v1alpha1.Source{Namespaces: ss("prod"), NotIPBlocks: ss("nonsense")}))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonDenyPolicy, policy: "foo/p"},

		// AUDIT.
		{name: "AUDIT match is reported and changes nothing",
			aps: []*v1alpha1.AuthorizationPolicy{ap("foo/audit", withAction(v1alpha1.ActionAudit), withRules(src(v1alpha1.Source{Principals: ss(prodWeb)})))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonNoAllowPolicy, audit: ss("foo/audit")},
		{name: "AUDIT does not count as an ALLOW policy",
			aps: []*v1alpha1.AuthorizationPolicy{ap("foo/audit", withAction(v1alpha1.ActionAudit))},
			req: request(plaintext()), allow: true, reason: ReasonNoAllowPolicy},
		{name: "AUDIT on a denied connection",
			aps: []*v1alpha1.AuthorizationPolicy{
				ap("foo/audit-a", withAction(v1alpha1.ActionAudit), withRules(v1alpha1.Rule{})),
				ap(rootNS+"/audit-b", withAction(v1alpha1.ActionAudit), withRules(op(v1alpha1.Operation{Ports: ss("8080")}), v1alpha1.Rule{})),
				ap("foo/audit-c", withAction(v1alpha1.ActionAudit), withRules(op(v1alpha1.Operation{Ports: ss("1")}))),
				deny("foo/d", v1alpha1.Rule{})},
			req: request(plaintext()), reason: ReasonDenyPolicy, policy: "foo/d", audit: ss(rootNS+"/audit-b", "foo/audit-a")},

		// Several policies, several scopes.
		{name: "root namespace DENY applies mesh-wide",
			aps: []*v1alpha1.AuthorizationPolicy{deny(rootNS+"/no-dev", src(v1alpha1.Source{Namespaces: ss("dev")})), allow("foo/all", v1alpha1.Rule{})},
			req: request(mtlsFrom(devWeb)), reason: ReasonDenyPolicy, policy: rootNS + "/no-dev"},
		{name: "root namespace selector reaches every namespace",
			aps: []*v1alpha1.AuthorizationPolicy{ap(rootNS+"/web-nothing", withSelector("app", "web"))},
			req: request(mtlsFrom(prodWeb), pod("elsewhere", "web-7", "app", "web")), reason: ReasonNoAllowMatch},
		{name: "a namespace selector does not reach other namespaces",
			aps: []*v1alpha1.AuthorizationPolicy{ap("bar/web-nothing", withSelector("app", "web"))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonNoAllowPolicy},
		{name: "selector needs every label",
			aps: []*v1alpha1.AuthorizationPolicy{ap("foo/x", withSelector("app", "web", "version", "v2"))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonNoAllowPolicy},
		{name: "DENY beats a matching ALLOW",
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/a", src(v1alpha1.Source{Principals: ss(prodWeb)})), deny("foo/d", src(v1alpha1.Source{Principals: ss(prodWeb)}))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonDenyPolicy, policy: "foo/d"},
		{name: "any one of several ALLOW policies suffices",
			aps: []*v1alpha1.AuthorizationPolicy{
				allow("foo/a", src(v1alpha1.Source{Principals: ss(prodWeb)})),
				allow(rootNS+"/b", src(v1alpha1.Source{Namespaces: ss("dev")})),
				ap("foo/c", withSelector("app", "web"))},
			req: request(mtlsFrom(devWeb)), allow: true, reason: ReasonAllowPolicy, policy: rootNS + "/b"},
		{name: "root ALLOW makes every workload default-deny",
			aps: []*v1alpha1.AuthorizationPolicy{allow(rootNS+"/only-prod", src(v1alpha1.Source{Namespaces: ss("prod")}))},
			req: request(mtlsFrom(devWeb), pod("bar", "x-1")), reason: ReasonNoAllowMatch},
		{name: "exact-principal rules are consulted first",
			aps: []*v1alpha1.AuthorizationPolicy{
				allow("foo/z", src(v1alpha1.Source{Principals: ss(prodWeb)})),
				allow("foo/a", v1alpha1.Rule{}),
				allow("foo/m", src(v1alpha1.Source{Namespaces: ss("prod")}))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/z"},
		{name: "IP-block rules are indexed per prefix length",
			aps: []*v1alpha1.AuthorizationPolicy{
				allow("foo/a", src(v1alpha1.Source{IPBlocks: ss("10.0.0.0/8", "192.168.0.0/16")})),
				allow("foo/b", src(v1alpha1.Source{IPBlocks: ss("10.1.0.0/16"), NotIPBlocks: ss("10.1.0.5")})),
				allow("foo/c", src(v1alpha1.Source{IPBlocks: ss("10.1.0.5/32"), Namespaces: ss("*")}))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/a"},
		{name: "namespace patterns are consulted before IP blocks",
			aps: []*v1alpha1.AuthorizationPolicy{
				allow("foo/a", src(v1alpha1.Source{IPBlocks: ss("10.0.0.0/8")})),
				allow("foo/b", src(v1alpha1.Source{Namespaces: ss("*od")})),
				allow("foo/c", src(v1alpha1.Source{Namespaces: ss("pr*")}))},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonAllowPolicy, policy: "foo/c"},
		{name: "principal prefix and suffix rules that do not fit",
			aps: []*v1alpha1.AuthorizationPolicy{
				allow("foo/a", src(v1alpha1.Source{Principals: ss("cluster.local/ns/prod/sa/web/*", "*/sa/we", "cluster.local/ns/prod/sa/webx")})),
				allow("foo/b", from(v1alpha1.Source{Principals: ss("x*")}, v1alpha1.Source{Namespaces: ss("*x")}))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},
		{name: "IP-block rules: only non-matching blocks",
			aps: []*v1alpha1.AuthorizationPolicy{
				allow("foo/b", src(v1alpha1.Source{IPBlocks: ss("10.1.0.0/16"), NotIPBlocks: ss("10.1.0.5")})),
				allow("foo/c", src(v1alpha1.Source{IPBlocks: ss("10.1.0.5/32"), Namespaces: ss("dev*")})),
				allow("foo/d", src(v1alpha1.Source{IPBlocks: ss("fd00::/8")}))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonNoAllowMatch},

		// Unsupported constructs never widen access.
		{name: "CUSTOM is enforced as DENY",
			aps: []*v1alpha1.AuthorizationPolicy{ap("foo/ext", withAction("CUSTOM"), withRules(op(v1alpha1.Operation{Paths: ss("/admin")})))},
			req: request(mtlsFrom(prodWeb)), reason: ReasonDenyPolicy, policy: "foo/ext"},
		{name: "targetRefs policy applies to no pod",
			aps: []*v1alpha1.AuthorizationPolicy{ap("foo/gw", func(p *v1alpha1.AuthorizationPolicy) {
				p.Spec.TargetRefs = []v1alpha1.PolicyTargetReference{{Kind: "Gateway", Name: "gw"}}
			})},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonNoAllowPolicy},
	}
}

func peerAuthCases() []decideCase {
	S, P, D, U := v1alpha1.MTLSStrict, v1alpha1.MTLSPermissive, v1alpha1.MTLSDisable, v1alpha1.MTLSUnset
	mesh := func(m v1alpha1.MTLSMode) *v1alpha1.PeerAuthentication { return pa(rootNS+"/default", m) }
	return []decideCase{
		{name: "no PeerAuthentication: PERMISSIVE", req: request(plaintext()), allow: true, reason: ReasonNoAllowPolicy, mode: P},
		{name: "mesh STRICT refuses plaintext", pas: []*v1alpha1.PeerAuthentication{mesh(S)},
			req: request(plaintext()), reason: ReasonStrictNoIdentity, policy: rootNS + "/default", mode: S},
		{name: "mesh STRICT admits mTLS", pas: []*v1alpha1.PeerAuthentication{mesh(S)},
			req: request(mtlsFrom(prodWeb)), allow: true, reason: ReasonNoAllowPolicy, mode: S},
		{name: "STRICT refuses an unverified principal", pas: []*v1alpha1.PeerAuthentication{mesh(S)},
			req: request(mtlsFrom(prodWeb), func(r *Request) { r.Secure = false }), reason: ReasonStrictNoIdentity, policy: rootNS + "/default", mode: S},
		{name: "STRICT is checked before ALLOW policies", pas: []*v1alpha1.PeerAuthentication{mesh(S)},
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/all", v1alpha1.Rule{})},
			req: request(plaintext()), reason: ReasonStrictNoIdentity, policy: rootNS + "/default", mode: S},
		{name: "namespace PERMISSIVE overrides mesh STRICT", pas: []*v1alpha1.PeerAuthentication{mesh(S), pa("foo/default", P)},
			req: request(plaintext()), allow: true, reason: ReasonNoAllowPolicy, mode: P},
		{name: "namespace UNSET inherits mesh STRICT", pas: []*v1alpha1.PeerAuthentication{mesh(S), pa("foo/default", U)},
			req: request(plaintext()), reason: ReasonStrictNoIdentity, policy: rootNS + "/default", mode: S},
		{name: "namespace without mtls inherits mesh STRICT", pas: []*v1alpha1.PeerAuthentication{mesh(S), pa("foo/default", "")},
			req: request(plaintext()), reason: ReasonStrictNoIdentity, policy: rootNS + "/default", mode: S},
		{name: "another namespace's STRICT does not apply", pas: []*v1alpha1.PeerAuthentication{pa("bar/default", S)},
			req: request(plaintext()), allow: true, reason: ReasonNoAllowPolicy, mode: P},
		{name: "workload DISABLE overrides namespace STRICT", pas: []*v1alpha1.PeerAuthentication{pa("foo/default", S), pa("foo/web", D, paSelector("app", "web"))},
			req: request(plaintext()), allow: true, reason: ReasonNoAllowPolicy, mode: D},
		{name: "workload STRICT for a non-matching selector does not apply", pas: []*v1alpha1.PeerAuthentication{pa("foo/db", S, paSelector("app", "db"))},
			req: request(plaintext()), allow: true, reason: ReasonNoAllowPolicy, mode: P},
		{name: "root namespace selector PeerAuthentication stays in the root namespace",
			pas: []*v1alpha1.PeerAuthentication{pa(rootNS+"/web", S, paSelector("app", "web"))},
			req: request(plaintext()), allow: true, reason: ReasonNoAllowPolicy, mode: P},

		// portLevelMtls.
		{name: "STRICT with port 8080 PERMISSIVE: plaintext on 8080 admitted",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/web", S, paSelector("app", "web"), paPorts("8080", "PERMISSIVE"))},
			req: request(plaintext(), port(8080)), allow: true, reason: ReasonNoAllowPolicy, mode: P},
		{name: "STRICT with port 8080 PERMISSIVE: plaintext on 9090 refused",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/web", S, paSelector("app", "web"), paPorts("8080", "PERMISSIVE"))},
			req: request(plaintext(), port(9090)), reason: ReasonStrictNoIdentity, policy: "foo/web", mode: S},
		{name: "STRICT with port 8080 PERMISSIVE: mTLS on 9090 admitted (the ORed-rules bug denies it)",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/web", S, paSelector("app", "web"), paPorts("8080", "PERMISSIVE"))},
			req: request(mtlsFrom(prodWeb), port(9090)), allow: true, reason: ReasonNoAllowPolicy, mode: S},
		{name: "two PERMISSIVE ports under STRICT: second port admitted",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/web", S, paSelector("app", "web"), paPorts("8080", "PERMISSIVE", "9090", "DISABLE"))},
			req: request(plaintext(), port(9090)), allow: true, reason: ReasonNoAllowPolicy, mode: D},
		{name: "two PERMISSIVE ports under STRICT: unlisted port refused",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/web", S, paSelector("app", "web"), paPorts("8080", "PERMISSIVE", "9090", "DISABLE"))},
			req: request(plaintext(), port(7070)), reason: ReasonStrictNoIdentity, policy: "foo/web", mode: S},
		{name: "port 8080 STRICT does not make 9090 strict",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/web", U, paSelector("app", "web"), paPorts("8080", "STRICT"))},
			req: request(plaintext(), port(9090)), allow: true, reason: ReasonNoAllowPolicy, mode: P},
		{name: "port 8080 STRICT is strict",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/web", U, paSelector("app", "web"), paPorts("8080", "STRICT"))},
			req: request(plaintext(), port(8080)), reason: ReasonStrictNoIdentity, policy: "foo/web", mode: S},
		{name: "port UNSET inherits the namespace mode",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/default", S), pa("foo/web", P, paSelector("app", "web"), paPorts("8080", "UNSET"))},
			req: request(plaintext(), port(8080)), allow: true, reason: ReasonNoAllowPolicy, mode: P},
		{name: "port UNSET under workload UNSET inherits the namespace STRICT",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/default", S), pa("foo/web", U, paSelector("app", "web"), paPorts("8080", "UNSET", "9090", "PERMISSIVE"))},
			req: request(plaintext(), port(8080)), reason: ReasonStrictNoIdentity, policy: "foo/default", mode: S},
		{name: "portLevelMtls on a namespace policy is ignored",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/default", S, paPorts("8080", "PERMISSIVE"))},
			req: request(plaintext(), port(8080)), reason: ReasonStrictNoIdentity, policy: "foo/default", mode: S},
		{name: "the oldest namespace policy wins",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/newer", P, paCreated(5)), pa("foo/older", S, paCreated(1))},
			req: request(plaintext()), reason: ReasonStrictNoIdentity, policy: "foo/older", mode: S},
		{name: "the oldest matching selector policy wins",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/a-newer", S, paSelector("app", "web"), paCreated(5)), pa("foo/z-older", P, paSelector("version", "v1"), paCreated(1))},
			req: request(plaintext()), allow: true, reason: ReasonNoAllowPolicy, mode: P},
		{name: "an unknown mode fails closed to STRICT",
			pas: []*v1alpha1.PeerAuthentication{pa("foo/default", "STRICt")},
			req: request(plaintext()), reason: ReasonStrictNoIdentity, policy: "foo/default", mode: S},
		{name: "PERMISSIVE plaintext is still subject to ALLOW policies",
			pas: []*v1alpha1.PeerAuthentication{mesh(P)},
			aps: []*v1alpha1.AuthorizationPolicy{allow("foo/p", src(v1alpha1.Source{Principals: ss(prodWeb)}))},
			req: request(plaintext()), reason: ReasonNoAllowMatch, mode: P},
	}
}

func TestDecide(t *testing.T) {
	for _, tc := range append(authzCases(), peerAuthCases()...) {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t)
			e.Update(tc.aps, tc.pas)
			for _, d := range []Decision{e.Decide(tc.req), e.Decide(tc.req), e.Recheck(tc.req)} { // miss, then cached view
				if d.Allow != tc.allow || d.Reason != tc.reason || d.Policy != tc.policy {
					t.Fatalf("got %v (policy %q), want allow=%v reason %q policy %q", d, d.Policy, tc.allow, tc.reason, tc.policy)
				}
				if !slices.Equal(d.Audit, tc.audit) {
					t.Fatalf("audit %v, want %v", d.Audit, tc.audit)
				}
				want := tc.mode
				if want == "" {
					want = v1alpha1.MTLSPermissive
				}
				if d.MTLSMode != want {
					t.Fatalf("mtls mode %q, want %q", d.MTLSMode, want)
				}
			}
			// Without a pod name nothing is cached; same answer.
			r := tc.req
			r.Workload.Name = ""
			if d := e.Decide(r); d.Allow != tc.allow || d.Policy != tc.policy {
				t.Fatalf("uncached decision %v differs", d)
			}
		})
	}
}

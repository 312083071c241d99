package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

var clientSeq atomic.Int64

// name returns a unique client pod name.
func name(prefix string) string { return fmt.Sprintf("%s-%d", prefix, clientSeq.Add(1)) }

// apply applies YAML with kubectl (as a user would).
func (m *mesh) apply(ctx context.Context, yaml string) {
	m.t.Helper()
	f := filepath.Join(m.t.TempDir(), "obj.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		m.t.Fatal(err)
	}
	if out, err := m.c.Kubectl(ctx, "apply", "-f", f); err != nil {
		m.t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, yaml)
	}
}

func (m *mesh) kubectl(ctx context.Context, args ...string) string {
	m.t.Helper()
	out, err := m.c.Kubectl(ctx, args...)
	if err != nil {
		m.t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return out
}

// strictRefusesPlaintext is scenario 3.
func (m *mesh) strictRefusesPlaintext(ctx context.Context, t *testing.T) {
	same, cross := m.echoPods(ctx)
	node1 := m.c.Nodes[0].Name
	// Before: the outside (unlabelled) client reaches the meshed server in
	// plaintext (PERMISSIVE is the default).
	r := m.client(ctx, plainNS, name("outside"), node1, "", "-target", cross.Status.PodIP+":8080", "-marker", "OUTSIDE", "-count", "1")
	if r.OK() != 1 {
		t.Fatalf("outside client before STRICT: %s", r.Logs)
	}
	m.apply(ctx, `apiVersion: security.ambit.dev/v1alpha1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: `+meshNS+`
spec:
  mtls:
    mode: STRICT
`)
	for _, dst := range []string{same.Status.PodIP, cross.Status.PodIP} {
		eventually(ctx, t, 20*time.Second, func() string {
			r := m.client(ctx, plainNS, name("outside"), node1, "", "-target", dst+":8080", "-marker", "OUTSIDE", "-count", "1", "-timeout", "3s")
			if r.OK() == 0 && r.Fails() == 1 {
				return ""
			}
			return "outside client still answered under STRICT: " + r.Logs
		})
	}
	// A meshed client still gets through (HBONE carries its identity).
	if r := m.client(ctx, meshNS, name("inside"), node1, clientSA, "-target", cross.Status.PodIP+":8080", "-marker", "INSIDE", "-count", "1"); r.OK() != 1 {
		t.Errorf("meshed client under STRICT: %s", r.Logs)
	}
	// Kubelet probes (TCP, from the node) keep the servers Ready: watch them
	// through several probe periods.
	for i := 0; i < 10; i++ {
		if _, err := m.c.WaitPods(ctx, meshNS, "app=echo", 2, cluster.PodReady); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	s2, c2 := m.echoPods(ctx)
	if restarts(s2)+restarts(c2) != 0 || s2.UID != same.UID || c2.UID != cross.UID {
		t.Errorf("echo pods restarted or replaced under STRICT")
	}
	// The refusal is in the server's access log.
	d := m.daemonPod(ctx, cross.Spec.NodeName)
	denied := false
	for _, a := range accessLog(m.daemonLogs(ctx, d.Name)) {
		if a.str("direction") == "inbound" && a.str("response_flags") == "DENY" && a.str("connection_security_policy") != "mutual_tls" {
			denied = true
		}
	}
	if !denied {
		t.Errorf("no DENY line for the plaintext connection in %s's access log", d.Name)
	}
}

// policiesOnNewAndLive is scenario 4.
func (m *mesh) policiesOnNewAndLive(ctx context.Context, t *testing.T) {
	_, cross := m.echoPods(ctx)
	node1 := m.c.Nodes[0].Name
	target := cross.Status.PodIP + ":8080"
	ok := func(what string) {
		t.Helper()
		eventually(ctx, t, 20*time.Second, func() string {
			if r := m.client(ctx, meshNS, name("new"), node1, clientSA, "-target", target, "-marker", "NEW", "-count", "1", "-timeout", "3s"); r.OK() != 1 {
				return what + ": a new connection failed: " + r.Logs
			}
			return ""
		})
	}
	refused := func(what string) {
		t.Helper()
		eventually(ctx, t, 20*time.Second, func() string {
			if r := m.client(ctx, meshNS, name("new"), node1, clientSA, "-target", target, "-marker", "NEW", "-count", "1", "-timeout", "3s"); r.OK() != 0 {
				return what + ": a new connection still got an answer: " + r.Logs
			}
			return ""
		})
	}
	// cutsLive starts a long-lived connection, applies change, and checks
	// the connection is closed soon after.
	cutsLive := func(what string, change func()) {
		t.Helper()
		hold := name("hold")
		m.startClient(ctx, meshNS, hold, node1, clientSA, "-hold", "-target", target, "-marker", "HOLD", "-count", "0", "-interval", "200ms", "-timeout", "3s")
		eventually(ctx, t, 30*time.Second, func() string {
			logs, _ := m.c.PodLogs(ctx, meshNS, hold, "client")
			if countPrefix(logs, "ok ") >= 2 {
				return ""
			}
			return what + ": long-lived connection not established: " + logs
		})
		t0 := time.Now()
		change()
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		r := m.waitClient(wctx, meshNS, hold)
		cancel()
		if r.Fails() != 1 {
			t.Fatalf("%s: the live connection was not closed: %s", what, r.Logs)
		}
		for _, l := range strings.Split(r.Logs, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "fail" {
				if ms, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					t.Logf("%s: live connection closed %s after the policy change was applied", what, time.UnixMilli(ms).Sub(t0).Round(time.Millisecond))
				}
			}
		}
		m.deletePod(ctx, meshNS, hold)
	}

	ok("no policy")
	denyWeb := `apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: deny-web
  namespace: ` + meshNS + `
spec:
  selector:
    matchLabels:
      app: echo
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/` + meshNS + `/sa/` + clientSA + `"]
`
	cutsLive("DENY by principal", func() { m.apply(ctx, denyWeb) })
	refused("DENY by principal")
	m.kubectl(ctx, "delete", "authorizationpolicies.security.ambit.dev", "-n", meshNS, "deny-web")
	ok("DENY removed")

	allow := func(port string) string {
		return `apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: allow-shop
  namespace: ` + meshNS + `
spec:
  selector:
    matchLabels:
      app: echo
  action: ALLOW
  rules:
  - from:
    - source:
        namespaces: ["` + meshNS + `"]
    to:
    - operation:
        ports: ["` + port + `"]
`
	}
	m.apply(ctx, allow("8080"))
	ok("ALLOW namespace and port 8080")
	cutsLive("ALLOW moved to port 9090", func() { m.apply(ctx, allow("9090")) })
	refused("ALLOW only port 9090")
	m.apply(ctx, allow("8080"))
	ok("ALLOW back on 8080")

	// The policy's status says it is enforced.
	out := m.kubectl(ctx, "get", "authorizationpolicies.security.ambit.dev", "-n", meshNS, "allow-shop", "-o", "jsonpath={.status.conditions}")
	t.Logf("allow-shop status: %s", out)
	m.kubectl(ctx, "delete", "authorizationpolicies.security.ambit.dev", "-n", meshNS, "allow-shop")
}

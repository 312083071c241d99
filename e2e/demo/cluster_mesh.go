//go:build linux

package demo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// label is scenario 2: plaintext before, HBONE with both identities after
// the namespace label, seen on the wire and in both daemons' access logs.
func (s *session) label(ctx context.Context) error {
	same, cross, err := s.echoPods(ctx)
	if err != nil {
		return err
	}
	node1 := s.c.Nodes[0]
	crossAddr := cross.Status.PodIP + ":8080"

	s.say("\nA client pod (the echo app in client mode, service account web) on %s sends one line", node1.Name)
	s.say("to the echo pod on %s. Meanwhile tcpdump records %s's eth0 (traffic between the nodes).", cross.Spec.NodeName, node1.Name)
	cp, err := node1.StartCapture(ctx, "eth0", "tcp")
	if err != nil {
		return err
	}
	r, err := s.runClient(ctx, shopNS, clientSA, "plain", false, "-target", crossAddr, "-marker", "PLAINTEXT-HELLO")
	if err != nil {
		return err
	}
	text, err := cp.Stop(ctx)
	if err != nil {
		return err
	}
	if r.count("ok ") != 1 {
		return fmt.Errorf("the plaintext client got no answer: %s", r.Logs)
	}
	for _, p := range packets(text) {
		if strings.Contains(p.payload, "PLAINTEXT-HELLO") {
			s.say("on the wire, in the clear (port 8080, the marker readable):\n    %s", p.header)
			break
		}
	}

	s.step("3. Put namespace shop in the mesh")
	t := time.Now()
	if _, err := s.kubectl(ctx, 0, "label", "namespace", shopNS, "ambit.dev/mesh=enabled"); err != nil {
		return err
	}
	if err := s.enrolled(ctx); err != nil {
		return err
	}
	enrolled := since(t)
	same2, cross2, err := s.echoPods(ctx)
	if err != nil {
		return err
	}
	if same2.UID != same.UID || cross2.UID != cross.UID || restarts(same2)+restarts(cross2) != 0 {
		return errors.New("the echo pods were replaced or restarted by the label")
	}
	s.say("(label to both running echo pods enrolled by their node's daemon: %s; neither pod restarted)", enrolled)
	s.fact("kubectl label: the running pods enrolled in %s, without a restart", enrolled)

	s.say("\nThe same client again, once to the echo pod on its own node and once across nodes,")
	s.say("with tcpdump on %s's pod bridge (cni0) and eth0:", node1.Name)
	var caps []*cluster.Capture
	for _, iface := range []string{"cni0", "eth0"} {
		cp, err := node1.StartCapture(ctx, iface, "tcp")
		if err != nil {
			return err
		}
		caps = append(caps, cp)
	}
	clients := map[string]string{}
	for _, c := range []struct{ name, target string }{
		{"same", same.Status.PodIP + ":8080"},
		{"cross", crossAddr},
	} {
		r, err := s.runClient(ctx, shopNS, clientSA, c.name, false, "-target", c.target, "-marker", secretTag+"-"+c.name)
		if err != nil {
			return err
		}
		if r.count("ok ") != 1 {
			return fmt.Errorf("meshed client %s got no answer: %s", c.name, r.Logs)
		}
		clients[c.name] = r.IP
	}
	var all []packet
	for _, cp := range caps {
		text, err := cp.Stop(ctx)
		if err != nil {
			return err
		}
		all = append(all, packets(text)...)
	}
	var on15008, other []packet
	markers := 0
	for _, p := range all {
		if strings.Contains(p.payload, secretTag) {
			markers++
		}
		for _, ip := range clients {
			for _, dst := range []string{same.Status.PodIP, cross.Status.PodIP} {
				if p.between(ip, dst) {
					if strings.Contains(p.header, "."+"15008") {
						on15008 = append(on15008, p)
					} else {
						other = append(other, p)
					}
				}
			}
		}
	}
	s.say("wire (%d packets captured on %s cni0 and eth0):", len(all), node1.Name)
	if len(on15008) == 0 {
		return errors.New("no packet between the clients and the echo pods on port 15008")
	}
	s.say("    %s", pickPacket(on15008, clients["cross"]))
	s.say("  %d packets between the clients and the echo pods, all TCP to/from port 15008 (HBONE); %d on another port", len(on15008), len(other))
	s.say("  marker %q found in %d packets (the app's bytes travel only inside mTLS)", secretTag, markers)
	if len(other) > 0 {
		return fmt.Errorf("packets between the clients and the echo pods not on 15008: %s", other[0].header)
	}
	if markers > 0 {
		return fmt.Errorf("the marker %s crossed the wire in plaintext", secretTag)
	}

	s.say("\nThe app is unchanged; it now sees its connections arrive from ambit's inbound side")
	s.say("(peer= above). Who was on each end? The daemons' JSON access log, one line per connection:")
	for _, side := range []struct{ node, dir string }{{cross.Spec.NodeName, "inbound"}, {node1.Name, "outbound"}} {
		d, err := s.daemon(ctx, side.node)
		if err != nil {
			return err
		}
		s.say("$ kubectl -n %s logs %s -c ambit | grep '\"log\":\"access\"'   # %s, %s side", ambitNS, d.Name, side.node, side.dir)
		logs, err := s.c.Kubectl(ctx, "-n", ambitNS, "logs", d.Name, "-c", "ambit")
		if err != nil {
			return err
		}
		found := false
		for _, a := range accessLines(logs) {
			if field(a, "direction") == side.dir && field(a, "source_principal") == webPrincipal && field(a, "destination_principal") == echoPrincipal {
				s.show(brief(a, "direction", "source_addr", "destination_addr", "source_principal", "destination_principal", "connection_security_policy", "bytes_sent", "bytes_received"), 0)
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("no %s access line from %s to %s on %s", side.dir, webPrincipal, echoPrincipal, side.node)
		}
	}
	s.fact("on the wire: %d packets between client and server pods, all TCP to port 15008; the app's marker in none", len(on15008))
	s.fact("each side's access log: source_principal %s, destination_principal %s", webPrincipal, echoPrincipal)
	s.say("source_principal %s: the client's identity, proven by its certificate", webPrincipal)
	s.say("destination_principal %s: the server's, checked by the client side", echoPrincipal)
	return nil
}

func restarts(p corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

// pickPacket prefers a packet from the cross-node client (on eth0).
func pickPacket(ps []packet, ip string) string {
	for _, p := range ps {
		if strings.Contains(p.header, " "+ip+".") {
			return p.header
		}
	}
	return ps[0].header
}

// metrics is scenario 5: each daemon's /metrics counts the connections
// with both identities.
func (s *session) metrics(ctx context.Context) error {
	s.step("4. Metrics: what Prometheus scrapes from each node's daemon (port 15020)")
	want := map[string]string{"reporter": "destination", "source_principal": webPrincipal,
		"destination_principal": echoPrincipal, "connection_security_policy": "mutual_tls"}
	for _, n := range s.c.Nodes {
		text, url, err := s.scrape(ctx, n)
		if err != nil {
			return err
		}
		s.say("$ curl -s %s | grep ambit_tcp_connections_opened_total   # on %s", url, n.Name)
		lines, v := metricLines(text, "ambit_tcp_connections_opened_total", want)
		if v < 1 {
			all, _ := metricLines(text, "ambit_tcp_connections_opened_total", nil)
			return fmt.Errorf("%s: no opened connection with both identities: %s", n.Name, strings.Join(all, "\n"))
		}
		s.show(lines[0], 0)
	}
	s.fact("/metrics of both daemons: ambit_tcp_connections_opened_total with both principals")
	return nil
}

const denyWeb = `apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: deny-web
  namespace: shop
spec:
  selector:
    matchLabels: {app: echo}
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/web"]
`

const allowShop = `apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: allow-shop
  namespace: shop
spec:
  selector:
    matchLabels: {app: echo}
  action: ALLOW
  rules:
  - from:
    - source:
        namespaces: ["shop"]
    to:
    - operation:
        ports: ["8080"]
`

// policy is scenario 4: DENY by principal closes a live connection and
// refuses new ones; ALLOW by namespace and port lets them through again.
func (s *session) policy(ctx context.Context) error {
	_, cross, err := s.echoPods(ctx)
	if err != nil {
		return err
	}
	target := cross.Status.PodIP + ":8080"
	s.step("5. Policy: DENY by principal")
	s.say("A long-lived connection first: one connection, a line every 200 ms.")
	if _, err := s.runClient(ctx, shopNS, clientSA, "hold", true, "-hold", "-target", target, "-marker", "HOLD", "-count", "0", "-interval", "200ms", "-timeout", "3s"); err != nil {
		return err
	}
	if err := poll(ctx, 30*time.Second, func() string {
		logs, _ := s.c.PodLogs(ctx, shopNS, "hold", "hold")
		if (clientResult{Logs: logs}).count("ok ") >= 2 {
			return ""
		}
		return "the long-lived connection is not answered: " + logs
	}); err != nil {
		return err
	}
	t := time.Now()
	if err := s.apply(ctx, denyWeb); err != nil {
		return err
	}
	r, err := s.waitClient(ctx, shopNS, "hold", 2)
	if err != nil {
		return err
	}
	if r.count("fail ") != 1 {
		return fmt.Errorf("the live connection was not closed by the DENY: %s", r.Logs)
	}
	cut := since(t)
	s.say("the live connection, answered %d times, was closed %s after the apply.", r.count("ok "), cut)

	s.say("\nA new connection from web:")
	answered := 0
	for i := 1; ; i++ {
		r, err := s.runClient(ctx, shopNS, clientSA, fmt.Sprintf("denied-%d", i), false, "-target", target, "-marker", "NEW", "-timeout", "3s")
		if err != nil {
			return err
		}
		if r.count("ok ") == 0 {
			break
		}
		answered++
		if time.Since(t) > 30*time.Second {
			return fmt.Errorf("new connections still answered 30s after the DENY: %s", r.Logs)
		}
	}
	if answered > 0 {
		s.say("(%d attempt(s) answered while the policy reached the node)", answered)
	}
	s.say("refused: no answer. The server side's access log:")
	deny, err := s.accessLine(ctx, cross.Spec.NodeName, func(a map[string]any) bool {
		return field(a, "direction") == "inbound" && field(a, "response_flags") == "DENY" && field(a, "source_principal") == webPrincipal
	})
	if err != nil {
		return err
	}
	s.show(deny, 0)
	s.fact("DENY by principal: a live connection closed %s after kubectl apply; new ones refused", cut)
	if _, err := s.kubectl(ctx, 0, "-n", shopNS, "delete", "authorizationpolicy", "deny-web"); err != nil {
		return err
	}

	s.step("6. Policy: ALLOW by namespace and port")
	if err := s.apply(ctx, allowShop); err != nil {
		return err
	}
	t = time.Now()
	for i := 1; ; i++ {
		r, err := s.runClient(ctx, shopNS, clientSA, fmt.Sprintf("allowed-%d", i), false, "-target", target, "-marker", "ALLOWED", "-timeout", "3s")
		if err != nil {
			return err
		}
		if r.count("ok ") == 1 {
			break
		}
		if time.Since(t) > 30*time.Second {
			return fmt.Errorf("new connections from shop to port 8080 not answered under the ALLOW: %s", r.Logs)
		}
	}
	s.say("allowed: web is in namespace shop and connects to port 8080.")

	s.say("\nA client from another namespace in the mesh (service account default) is not allowed:")
	for _, args := range [][]string{{"create", "namespace", otherNS}, {"label", "namespace", otherNS, "ambit.dev/mesh=enabled"}} {
		if _, err := s.kubectl(ctx, 0, args...); err != nil {
			return err
		}
	}
	otherPrincipal := "cluster.local/ns/" + otherNS + "/sa/default"
	if err := poll(ctx, 30*time.Second, func() string {
		_, err := s.c.Clientset().CoreV1().ServiceAccounts(otherNS).Get(ctx, "default", metav1.GetOptions{})
		return errString(err)
	}); err != nil {
		return err
	}
	r, err = s.runClient(ctx, otherNS, "default", "other", false, "-target", target, "-marker", "OTHER", "-timeout", "3s")
	if err != nil {
		return err
	}
	if r.count("ok ") != 0 {
		return fmt.Errorf("a client of namespace %s got through the ALLOW of namespace shop: %s", otherNS, r.Logs)
	}
	s.say("refused: no answer. The server side's access log:")
	line, err := s.accessLine(ctx, cross.Spec.NodeName, func(a map[string]any) bool {
		return field(a, "direction") == "inbound" && field(a, "response_flags") == "DENY" && field(a, "source_principal") == otherPrincipal
	})
	if err != nil {
		return err
	}
	s.show(line, 0)
	s.fact("ALLOW by namespace and port: shop's client in, another namespace's refused")
	_, err = s.kubectl(ctx, 0, "-n", shopNS, "get", "authorizationpolicies", "-o", "wide")
	return err
}

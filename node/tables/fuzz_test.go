package tables

import (
	"log/slog"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// FuzzHandlers feeds objects with arbitrary addresses, names and ports
// through the handlers: no panic, invalid objects are counted and change
// nothing, and Resolve keeps its invariants.
func FuzzHandlers(f *testing.F) {
	f.Add("10.0.0.1", "10.96.0.1", "http", int32(80), int32(8080), "10.0.0.1", "10.96.0.1:80")
	f.Add("fd00::1", "fd00::96:1", "", int32(443), int32(0), "fd00::1", "[fd00::96:1]:443")
	f.Add("10.0.0.999", "None", "x", int32(70000), int32(-1), "::ffff:10.0.0.1", "1.2.3.4:5")
	f.Add("", "", "", int32(0), int32(0), "zz", "0.0.0.0:0")
	f.Fuzz(func(t *testing.T, podIP, clusterIP, portName string, port, target int32, epAddr, dst string) {
		tb := newTables(t, func(o *Options) { o.Logger = slog.New(slog.DiscardHandler) })
		tb.OnAdd(ns("a", meshOn), true)
		tb.OnAdd(pod("a", "p", localNode, []string{podIP}), true)
		tb.OnAdd(svc("a", "s", []string{clusterIP}, []corev1.ServicePort{sport(portName, port, intstr.FromInt32(target))}), true)
		tb.OnAdd(eslice("a", "s-1", "s", false, map[string]int32{portName: target}, ep{addr: epAddr, node: localNode}), true)
		st := tb.Stats()
		if st.Pods+st.Services+st.EndpointSlices+int(st.BadObjects) < 3 {
			t.Fatalf("objects neither stored nor counted as bad: %+v", st)
		}
		d, err := netip.ParseAddrPort(dst)
		if err != nil {
			return
		}
		r := tb.Resolve(d, netip.Addr{})
		switch r.Kind {
		case HBONE:
			if r.Identity.IsZero() || r.Tunnel.Port() != HBONEPort || r.Tunnel.Addr() != r.Endpoint.Addr() {
				t.Fatalf("bad HBONE route %+v", r)
			}
		case Passthrough, Deny:
			if r.Tunnel.IsValid() || !r.Identity.IsZero() {
				t.Fatalf("non-HBONE route with tunnel or identity %+v", r)
			}
		default:
			t.Fatalf("kind %v", r.Kind)
		}
		if r.Reason == "" {
			t.Fatalf("route without reason %+v", r)
		}
	})
}

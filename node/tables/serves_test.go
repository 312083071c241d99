package tables

import (
	"net/netip"
	"testing"
)

func TestServes(t *testing.T) {
	tb := newTables(t, nil)
	tb.OnAdd(eslice("pay", "backend-1", "backend", false, map[string]int32{"http": 8080},
		ep{addr: "10.1.0.5", node: "n1"}, ep{addr: "10.1.0.6", node: "n2", ready: bp(false)}), false)
	web := Ref{Namespace: "pay", Name: "backend"}
	for _, c := range []struct {
		svc  Ref
		ep   string
		want bool
	}{
		{web, "10.1.0.5:8080", true},
		{web, "10.1.0.6:8080", true}, // not ready: still behind the Service
		{web, "10.1.0.5:9090", false},
		{web, "10.1.0.7:8080", false},
		{Ref{Namespace: "pay", Name: "other"}, "10.1.0.5:8080", false},
		{Ref{Namespace: "shop", Name: "backend"}, "10.1.0.5:8080", false},
	} {
		if got := tb.Serves(c.svc, netip.MustParseAddrPort(c.ep)); got != c.want {
			t.Errorf("Serves(%v, %s) = %v, want %v", c.svc, c.ep, got, c.want)
		}
	}
}

package metrics

import (
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestNSCacheBounded(t *testing.T) {
	c := newNSCache(2)
	for round := range 2 {
		for i := range 5 {
			id := spiffeid.RequireFromString(fmt.Sprintf("spiffe://cluster.local/ns/n%d/sa/default", i))
			if got, want := c.namespace(id), fmt.Sprintf("n%d", i); got != want {
				t.Fatalf("round %d: namespace(%s) = %q, want %q", round, id, got, want)
			}
		}
	}
	if len(c.m) != 2 {
		t.Fatalf("cache holds %d IDs, want 2", len(c.m))
	}
	for id, want := range map[string]string{
		"spiffe://cluster.local/gateway":             Unknown,
		"spiffe://cluster.local/ns/a/sa/b/extra":     Unknown,
		"spiffe://other.example/ns/shop/sa/frontend": "shop",
	} {
		if got := c.namespace(spiffeid.RequireFromString(id)); got != want {
			t.Errorf("namespace(%s) = %q, want %q", id, got, want)
		}
	}
	if got := c.namespace(spiffeid.ID{}); got != Unknown {
		t.Errorf("namespace(zero) = %q", got)
	}
}

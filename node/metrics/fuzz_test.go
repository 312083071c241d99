package metrics

import (
	"net/netip"
	"testing"
)

// FuzzBounded: a label value from the tables is either kept as it is or
// replaced by "unknown", and what is kept never parses as an address.
func FuzzBounded(f *testing.F) {
	for _, s := range []string{"backend", "10.0.0.1", "10.0.0.1:80", "[::1]:15008", "fd00::1", "::", "", "1password", "a:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := bounded(v)
		if got != v && got != Unknown {
			t.Fatalf("bounded(%q) = %q", v, got)
		}
		if _, err := netip.ParseAddr(got); err == nil {
			t.Fatalf("bounded(%q) kept an address", v)
		}
		if _, err := netip.ParseAddrPort(got); err == nil {
			t.Fatalf("bounded(%q) kept an address:port", v)
		}
	})
}

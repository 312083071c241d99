package config

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

// FuzzParse feeds Parse arbitrary command lines (NUL-separated, after a
// valid base so later checks are reached) and environments
// ("KEY=VALUE" lines). Parse must not panic; it returns a valid Config, or
// flag.ErrHelp, or a one-line error wrapping ErrUsage.
func FuzzParse(f *testing.F) {
	fx := newFixture(f)
	seeds := []struct{ args, env string }{
		{"", ""},
		{"--metrics-addr=x:99999", ""},
		{"--admin-addr=:15000\x00--fips", "AMBIT_LOG_LEVEL=debug"},
		{"--node-name=", "NODE_NAME=node-2\nPOD_NAMESPACE=ambit"},
		{"--trust-domain=spiffe://a/b", "AMBIT_FIPS=maybe"},
		{"--mesh-namespace-selector=a in (", ""},
		{"--ca-address=https://[::1]:0", ""},
		{"-h", ""},
		{"--\x00positional", ""},
		{"--unknown", "AMBIT_READY_ADDR=[::]:15020"},
		{"--log-level", ""},
		{"--cni-socket=rel\x00--bpf-pin-dir=/x", "AMBIT_MESH_POD_OPT_OUT= "},
	}
	for _, s := range seeds {
		f.Add(s.args, s.env)
	}
	f.Fuzz(func(t *testing.T, args, envText string) {
		var extra []string
		if args != "" {
			extra = strings.Split(args, "\x00")
		}
		vars := map[string]string{}
		for _, line := range strings.Split(envText, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				vars[k] = v
			}
		}
		c, err := Parse(fx.args(extra...), env(vars))
		switch {
		case err == nil:
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse accepted a Config that Validate refuses: %v", verr)
			}
		case errors.Is(err, flag.ErrHelp):
		case errors.Is(err, ErrUsage):
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r") || msg == "" {
				t.Fatalf("error is not one non-empty line: %q", msg)
			}
		default:
			t.Fatalf("error %v wraps neither ErrUsage nor flag.ErrHelp", err)
		}
	})
}

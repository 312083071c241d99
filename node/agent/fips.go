package agent

import (
	"crypto/fips140"
	"runtime/debug"
)

// fipsView is the "fips" section of /config_dump: whether the daemon runs
// the FIPS mode TLS profile (--fips) and what the Go runtime says about
// its FIPS 140-3 module. The module's validation status is Go's
// (docs/fips.md); this only reports what this binary runs.
type fipsView struct {
	// Requested: --fips, the TLS profile of identity.RestrictTLSToFIPS on
	// the HBONE tunnel and the CA client.
	Requested bool `json:"requested"`
	// Enabled and Enforced: GODEBUG=fips140=on (or only), and only.
	Enabled  bool `json:"fips140_enabled"`
	Enforced bool `json:"fips140_enforced"`
	// ModuleVersion is crypto/fips140.Version(): "latest" unless the
	// binary was built against a frozen module (GOFIPS140).
	ModuleVersion string `json:"module_version"`
	// BuildSetting is the GOFIPS140 the binary was built with ("" = off).
	BuildSetting string `json:"gofips140"`
}

func fipsState(requested bool) fipsView {
	v := fipsView{Requested: requested, Enabled: fips140.Enabled(), Enforced: fips140.Enforced(), ModuleVersion: fips140.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOFIPS140" {
				v.BuildSetting = s.Value
			}
		}
	}
	return v
}

package agent

import (
	"crypto/fips140"
	"encoding/json"
	"strings"
	"testing"
)

func TestFIPSSection(t *testing.T) {
	v := fipsState(true)
	if !v.Requested || v.Enabled != fips140.Enabled() || v.Enforced != fips140.Enforced() || v.ModuleVersion != fips140.Version() {
		t.Fatalf("%+v", v)
	}
	b, err := json.Marshal(v)
	if err != nil || !strings.Contains(string(b), `"requested":true`) || !strings.Contains(string(b), `"module_version":`) {
		t.Fatalf("%s %v", b, err)
	}
}

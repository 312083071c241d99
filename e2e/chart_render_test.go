package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// Helpers of chart_test.go: run bin/helm without a cluster and decode what
// it renders.

const chartNamespace = "ambit-system"

// chartTools returns the module root and bin/helm, skipping the test when
// helm is not built (failing instead under AMBIT_E2E_REQUIRE=1).
func chartTools(t *testing.T) (root, helm string) {
	t.Helper()
	root, err := cluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("AMBIT_E2E_BIN")
	if bin == "" {
		bin = filepath.Join(root, "bin")
	}
	helm = filepath.Join(bin, "helm")
	if _, err := os.Stat(helm); err != nil {
		if os.Getenv("AMBIT_E2E_REQUIRE") == "1" {
			t.Fatalf("AMBIT_E2E_REQUIRE=1 but %s is missing (e2e/hack/build-bins.sh)", helm)
		}
		t.Skipf("%s not built (e2e/hack/build-bins.sh)", helm)
	}
	return root, helm
}

// runHelm runs helm with its own throw-away home directories.
func runHelm(ctx context.Context, t *testing.T, helm string, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config",
		"HELM_DATA_HOME="+home+"/data", "KUBECONFIG=/dev/null")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// object is one rendered manifest, decoded generically; decode() turns it
// into a typed API object.
type object struct {
	Kind, Name string
	raw        []byte // JSON
}

func (o object) decode(t *testing.T, into any) {
	t.Helper()
	if err := yaml.Unmarshal(o.raw, into); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Name, err)
	}
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// parseManifests splits helm's output into objects.
func parseManifests(t *testing.T, out string) []object {
	t.Helper()
	var objs []object
	for _, doc := range docSep.Split(out, -1) {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if head.Kind == "" {
			continue // comments only
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, object{Kind: head.Kind, Name: head.Metadata.Name, raw: js})
	}
	return objs
}

// find returns the one object of kind and name, failing otherwise.
func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	var got []object
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			got = append(got, o)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d objects %s/%s rendered, want 1 (have %v)", len(got), kind, name, kinds(objs))
	}
	return got[0]
}

func kinds(objs []object) []string {
	var s []string
	for _, o := range objs {
		s = append(s, o.Kind+"/"+o.Name)
	}
	return s
}

// parseCertPEM parses the first certificate of a PEM bundle.
func parseCertPEM(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %.80q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

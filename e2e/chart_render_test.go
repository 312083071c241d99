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
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/redirect/cniplugin"
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

// TestChartCNIRender checks how the chart installs ambit-cni (render only):
// the installer gets the release namespace and cni.excludeNamespaces as
// --exclude-namespaces (a list the installer itself accepts); the daemon
// container mounts the CNI directories whatever cni.uninstallOnStop says
// (its reconciler needs them); no preStop hook removes the entry (the
// daemon does when its DaemonSet is gone), and cni.uninstallOnStop=false
// tells the daemon never to remove it.
func TestChartCNIRender(t *testing.T) {
	root, helm := chartTools(t)
	chart := filepath.Join(root, "charts", "ambit")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	daemonSet := func(ns string, args ...string) appsv1.DaemonSet {
		t.Helper()
		out, err := runHelm(ctx, t, helm, append([]string{"template", "ambit", chart, "-n", ns}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		var ds appsv1.DaemonSet
		find(t, parseManifests(t, out), "DaemonSet", "ambit").decode(t, &ds)
		if len(ds.Spec.Template.Spec.InitContainers) != 1 || len(ds.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("want one init and one daemon container: %+v", ds.Spec.Template.Spec)
		}
		return ds
	}
	excludeArg := func(ds appsv1.DaemonSet) string {
		t.Helper()
		cmd := ds.Spec.Template.Spec.InitContainers[0].Command
		var got []string
		for _, a := range cmd {
			if v, ok := strings.CutPrefix(a, "--exclude-namespaces="); ok {
				got = append(got, v)
			}
		}
		if len(got) != 1 {
			t.Fatalf("installer command %v: want one --exclude-namespaces", cmd)
		}
		if _, err := cniplugin.ParseNamespaceList(got[0]); err != nil {
			t.Errorf("--exclude-namespaces=%s is refused by the installer: %v", got[0], err)
		}
		return got[0]
	}

	ds := daemonSet(chartNamespace)
	install := ds.Spec.Template.Spec.InitContainers[0]
	wantInstall := []string{"/ambit-cni", "install", "--cni-bin-dir=/host/cni/bin", "--cni-conf-dir=/host/cni/net.d",
		"--socket=/var/run/ambit/cni.sock", "--exclude-namespaces=ambit-system,kube-system"}
	if !slices.Equal(install.Command, wantInstall) {
		t.Errorf("installer command\n %v\nwant\n %v", install.Command, wantInstall)
	}
	d := ds.Spec.Template.Spec.Containers[0]
	// The daemon re-writes the entry: it must be given the same list.
	if !slices.Contains(d.Args, "--cni-exclude-namespaces=ambit-system,kube-system") {
		t.Errorf("daemon args %v lack --cni-exclude-namespaces=ambit-system,kube-system", d.Args)
	}
	if d.Lifecycle != nil && d.Lifecycle.PreStop != nil {
		t.Errorf("preStop %+v: the CNI entry must stay through upgrades", d.Lifecycle.PreStop)
	}
	if slices.Contains(d.Args, "--cni-keep-on-stop") {
		t.Errorf("daemon args %v: --cni-keep-on-stop by default", d.Args)
	}
	if ds.Spec.Template.Spec.TerminationGracePeriodSeconds == nil || *ds.Spec.Template.Spec.TerminationGracePeriodSeconds < 8+20 {
		t.Errorf("grace period %v: must cover the handover (8 s) and the drain (20 s)", ds.Spec.Template.Spec.TerminationGracePeriodSeconds)
	}
	checkCNIMounts(t, ds, filepath.Dir(cniplugin.DefaultStopFile))

	// cni.uninstallOnStop=false: the daemon never removes the entry, and
	// still mounts the directories.
	off := daemonSet(chartNamespace, "--set", "cni.uninstallOnStop=false")
	if !slices.Contains(off.Spec.Template.Spec.Containers[0].Args, "--cni-keep-on-stop") {
		t.Errorf("cni.uninstallOnStop=false: daemon args %v lack --cni-keep-on-stop", off.Spec.Template.Spec.Containers[0].Args)
	}
	checkCNIMounts(t, off, filepath.Dir(cniplugin.DefaultStopFile))

	// The list: release namespace first, then the values, no duplicates.
	for _, c := range []struct {
		ns   string
		args []string
		want string
	}{
		{"mesh", nil, "mesh,kube-system"},
		{"kube-system", nil, "kube-system"},
		{chartNamespace, []string{"--set", "cni.excludeNamespaces={kube-system,monitoring,ambit-system}"}, "ambit-system,kube-system,monitoring"},
		{chartNamespace, []string{"--set", "cni.excludeNamespaces=null"}, "ambit-system"},
		{chartNamespace, []string{"--set", "cni.excludeNamespaces={}"}, "ambit-system"},
	} {
		ds := daemonSet(c.ns, c.args...)
		if got := excludeArg(ds); got != c.want {
			t.Errorf("-n %s %v: --exclude-namespaces=%s, want %s", c.ns, c.args, got, c.want)
		}
		if a := "--cni-exclude-namespaces=" + c.want; !slices.Contains(ds.Spec.Template.Spec.Containers[0].Args, a) {
			t.Errorf("-n %s %v: daemon args lack %s", c.ns, c.args, a)
		}
	}
	for _, bad := range []string{"cni.excludeNamespaces={Kube}", "cni.excludeNamespaces={a.b}", "cni.excludeNamespaces={-x}"} {
		out, err := runHelm(ctx, t, helm, "template", "ambit", chart, "-n", chartNamespace, "--set", bad)
		if err == nil || !strings.Contains(err.Error(), "is not a namespace name") {
			t.Errorf("--set %s: %v, want a chart validation error\n%.200s", bad, err, out)
		}
	}
}

// checkCNIMounts: the daemon container mounts the host's CNI directories
// (writable) where the installer does, and an emptyDir at stopDir, its own
// /tmp, for the stop file.
func checkCNIMounts(t *testing.T, ds appsv1.DaemonSet, stopDir string) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	hostPath := map[string]string{}
	emptyDir := map[string]bool{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPath[v.Name] = v.HostPath.Path
		}
		emptyDir[v.Name] = v.EmptyDir != nil
	}
	for _, c := range []corev1.Container{spec.InitContainers[0], spec.Containers[0]} {
		mounts := map[string]corev1.VolumeMount{}
		for _, m := range c.VolumeMounts {
			mounts[m.MountPath] = m
		}
		for path, host := range map[string]string{"/host/cni/bin": "/opt/cni/bin", "/host/cni/net.d": "/etc/cni/net.d"} {
			m, ok := mounts[path]
			if !ok || m.ReadOnly || hostPath[m.Name] != host {
				t.Errorf("container %s: %s mounted %v (%+v), want host %s writable", c.Name, path, ok, m, host)
			}
		}
		if c.Name == "ambit" {
			if m, ok := mounts[stopDir]; !ok || !emptyDir[m.Name] || m.ReadOnly {
				t.Errorf("daemon container: %s is %+v, want a writable emptyDir (the stop file)", stopDir, m)
			}
		}
	}
}

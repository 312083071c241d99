package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/ambit-mesh/ambit/e2e/cluster"
)

// TestChart proves charts/ambit: `helm lint --strict` is clean; the default
// (development CA) and the existingSecret renderings have the properties
// the design promises (checked on the decoded objects); bad values fail
// with a message; and both renderings are accepted by a real API server
// (server-side apply, dry run, after the chart's CRDs are installed); and
// `helm install` runs the CA and installs the CNI plugin (helmInstall).
func TestChart(t *testing.T) {
	root, helm := chartTools(t)
	chart := filepath.Join(root, "charts", "ambit")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute) // includes waiting for another package's cluster
	defer cancel()

	if out, err := runHelm(ctx, t, helm, "lint", "--strict", chart); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	render := func(args ...string) string {
		t.Helper()
		out, err := runHelm(ctx, t, helm, append([]string{"template", "ambit", chart, "-n", chartNamespace}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	dev := render()
	devObjs := parseManifests(t, dev)
	checkDaemonSet(t, devObjs, false)
	checkRBAC(t, devObjs)
	checkDevCA(t, devObjs)
	checkDashboard(t, devObjs)

	bundle := testRootPEM(t)
	bundleFile := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(bundleFile, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	pki := render("--set", "ca.existingSecret=corp-intermediate", "--set-file", "ca.trustBundle="+bundleFile,
		"--set", "fips=true", "--set", "image.tag=9.9.9")
	pkiObjs := parseManifests(t, pki)
	checkDaemonSet(t, pkiObjs, true)
	checkRBAC(t, pkiObjs)
	checkPKICA(t, pkiObjs, string(bundle))

	// A bundle from the user's own ConfigMap: none rendered, the daemon mounts theirs.
	byName := parseManifests(t, render("--set", "ca.existingSecret=corp-intermediate", "--set", "ca.trustBundleConfigMap=corp-roots"))
	if slices.Contains(kinds(byName), "ConfigMap/ambit-trust-bundle") {
		t.Error("ca.trustBundleConfigMap set, but the chart rendered its own bundle")
	}
	var ds appsv1.DaemonSet
	find(t, byName, "DaemonSet", "ambit").decode(t, &ds)
	if !slices.ContainsFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.ConfigMap != nil && v.ConfigMap.Name == "corp-roots"
	}) {
		t.Error("daemon does not mount the user's bundle ConfigMap corp-roots")
	}
	// An external CA: no CA objects, the daemon points at it.
	ext := parseManifests(t, render("--set", "ca.enabled=false", "--set", "ca.address=https://ca.example:443", "--set-file", "ca.trustBundle="+bundleFile))
	for _, k := range kinds(ext) {
		if strings.HasSuffix(k, "/ambit-ca") || strings.HasPrefix(k, "Secret/") {
			t.Errorf("ca.enabled=false rendered %s", k)
		}
	}
	find(t, ext, "DaemonSet", "ambit").decode(t, &ds)
	if !slices.Contains(ds.Spec.Template.Spec.Containers[0].Args, "--ca-address=https://ca.example:443") {
		t.Errorf("daemon args %v lack the external CA address", ds.Spec.Template.Spec.Containers[0].Args)
	}

	// The PodMonitor needs both the switch and the API.
	if objs := parseManifests(t, render("--set", "metrics.podMonitor.enabled=true")); slices.Contains(kinds(objs), "PodMonitor/ambit") {
		t.Error("PodMonitor rendered although the cluster does not serve monitoring.coreos.com/v1")
	}
	pm := parseManifests(t, render("--set", "metrics.podMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1"))
	if !strings.Contains(string(find(t, pm, "PodMonitor", "ambit").raw), `"port":"metrics"`) {
		t.Error("PodMonitor does not scrape the named port metrics")
	}
	if slices.Contains(kinds(parseManifests(t, render("--set", "daemon.priorityClassQuota.enabled=false"))), "ResourceQuota/ambit-critical-pods") {
		t.Error("ResourceQuota rendered with daemon.priorityClassQuota.enabled=false")
	}

	// Values that cannot work fail the rendering with a reason.
	for _, bad := range [][]string{
		{"--set", "ca.existingSecret=x"},
		{"--set", "ca.enabled=false"},
		{"--set", "logLevel=loud"},
	} {
		out, err := runHelm(ctx, t, helm, append([]string{"template", "ambit", chart, "-n", chartNamespace}, bad...)...)
		if err == nil {
			t.Errorf("helm template %v succeeded:\n%.300s", bad, out)
		} else if !strings.Contains(err.Error(), "execution error") {
			t.Errorf("helm template %v: %v, want a chart validation error", bad, err)
		}
	}

	t.Run("ServerDryRun", func(t *testing.T) {
		serverDryRun(ctx, t, chart, map[string]string{"dev": dev, "existingSecret": pki})
	})
}

// serverDryRun applies the renderings to a real API server (one node, no
// DNS: only the API matters) with server-side apply in dry-run mode, then
// installs the chart for real (helmInstall).
func serverDryRun(ctx context.Context, t *testing.T, chart string, renderings map[string]string) {
	opts := cluster.Options{Nodes: 1, NoDNS: true, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	cluster.SkipIfUnavailable(t, opts)
	image := buildChartImage(ctx, t.TempDir())
	t0 := time.Now()
	c, err := cluster.Start(ctx, t, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster start: %s", time.Since(t0).Round(time.Millisecond))
	if out, err := c.Kubectl(ctx, "create", "namespace", chartNamespace); err != nil {
		t.Fatal(err, out)
	}
	if out, err := c.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(chart, "crds")); err != nil {
		t.Fatal(err, out)
	}
	if out, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/authorizationpolicies.security.ambit.dev", "crd/peerauthentications.security.ambit.dev"); err != nil {
		t.Fatal(err, out)
	}
	dir := t.TempDir()
	for name, manifest := range renderings {
		f := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := c.Kubectl(ctx, "apply", "--server-side", "--dry-run=server", "--field-manager=helm", "-f", f)
		if err != nil {
			t.Fatalf("%s rendering refused by the API server: %v", name, err)
		}
		applied := strings.Count(out, "serverside-applied (server dry run)")
		if want := len(parseManifests(t, manifest)); applied != want {
			t.Errorf("%s: %d objects applied (dry run), want %d:\n%s", name, applied, want, out)
		}
	}
	// Negative control: the server does validate. The bpffs mount is
	// HostToContainer because Bidirectional needs a privileged container;
	// asking for it must be refused here.
	bad := strings.Replace(renderings["dev"], "mountPropagation: HostToContainer", "mountPropagation: Bidirectional", 1)
	if bad == renderings["dev"] {
		t.Fatal("negative control: no HostToContainer mount in the rendering")
	}
	f := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(f, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(ctx, "apply", "--server-side", "--dry-run=server", "--field-manager=helm", "-f", f); err == nil ||
		!strings.Contains(out, "Bidirectional") {
		t.Errorf("a Bidirectional mount in an unprivileged container was not refused: %v\n%s", err, out)
	}
	// Dry run means nothing was created.
	if out, err := c.Kubectl(ctx, "get", "daemonsets,deployments,secrets", "-n", chartNamespace, "-l", "app.kubernetes.io/part-of=ambit", "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("dry run left objects behind: %q %v", out, err)
	}
	t.Run("HelmInstall", func(t *testing.T) { helmInstall(ctx, t, c, chart, image) })
}

func checkDaemonSet(t *testing.T, objs []object, fips bool) {
	t.Helper()
	var ds appsv1.DaemonSet
	find(t, objs, "DaemonSet", "ambit").decode(t, &ds)
	spec := ds.Spec.Template.Spec
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("hostNetwork %v hostPID %v hostIPC %v, want all false", spec.HostNetwork, spec.HostPID, spec.HostIPC)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.Capabilities == nil {
			t.Fatalf("container %s has no securityContext.capabilities", c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s is privileged", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s allows privilege escalation", c.Name)
		}
		if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("container %s drops %v, want [ALL]", c.Name, sc.Capabilities.Drop)
		}
		want := []corev1.Capability{}
		if c.Name == "ambit" {
			want = []corev1.Capability{"NET_ADMIN", "SYS_ADMIN", "BPF"}
		}
		got := slices.Clone(sc.Capabilities.Add)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("container %s adds %v, want exactly %v", c.Name, got, want)
		}
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 1 || spec.InitContainers[0].Command[1] != "install" {
		t.Fatalf("want one daemon container and the install-cni init container, got %d + %d", len(spec.Containers), len(spec.InitContainers))
	}
	d := spec.Containers[0]
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == ""
	}) {
		t.Errorf("tolerations %+v lack {operator: Exists} (every taint)", spec.Tolerations)
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil ||
		ru.MaxSurge == nil || ru.MaxSurge.String() != "1" || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" {
		t.Errorf("update strategy %+v, want RollingUpdate maxSurge 1 maxUnavailable 0", ds.Spec.UpdateStrategy)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	rp := d.ReadinessProbe
	if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/healthz/ready" || rp.HTTPGet.Port.IntValue() != 15021 {
		t.Errorf("readiness probe %+v, want GET :15021/healthz/ready", rp)
	}
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "15020" || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("prometheus annotations %v", ann)
	}
	if !slices.ContainsFunc(d.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" && p.ContainerPort == 15020 }) {
		t.Errorf("no port named metrics on 15020: %+v", d.Ports)
	}
	if d.Resources.Requests.Cpu().IsZero() || d.Resources.Requests.Memory().IsZero() {
		t.Errorf("daemon resource requests %v", d.Resources.Requests)
	}
	// No preStop: the CNI entry stays through restarts and upgrades; the
	// daemon removes it itself when its DaemonSet is gone.
	if d.Lifecycle != nil && d.Lifecycle.PreStop != nil {
		t.Errorf("preStop hook %+v: it would remove the CNI entry during upgrades", d.Lifecycle.PreStop)
	}
	// Host paths: exactly what the daemon needs, none Bidirectional.
	var hostPaths []string
	var token *corev1.ServiceAccountTokenProjection
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths = append(hostPaths, v.HostPath.Path)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					token = s.ServiceAccountToken
				}
			}
		}
	}
	slices.Sort(hostPaths)
	if want := []string{"/etc/cni/net.d", "/opt/cni/bin", "/proc/1/ns/net", "/sys/fs/bpf", "/sys/fs/cgroup", "/var/run/ambit", "/var/run/netns"}; !slices.Equal(hostPaths, want) {
		t.Errorf("host paths %v, want %v", hostPaths, want)
	}
	for _, m := range d.VolumeMounts {
		if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
			t.Errorf("mount %s is Bidirectional (needs a privileged container)", m.Name)
		}
	}
	if token == nil || token.Audience != "ambit-ca" || token.ExpirationSeconds == nil || *token.ExpirationSeconds != 3600 {
		t.Errorf("projected CA token %+v, want audience ambit-ca, 3600 s", token)
	}
	args := strings.Join(d.Args, " ")
	for _, a := range []string{"--node-name=$(NODE_NAME)", "--ca-audience=ambit-ca", "--ca-token-file=/var/run/secrets/ambit/ca-token/token",
		"--ca-address=https://ambit-ca.ambit-system.svc:15012", "--cni-socket=/var/run/ambit/cni.sock", "--bpf-pin-dir=/sys/fs/bpf/ambit",
		"--root-namespace=ambit-system", "--mesh-namespace-selector=ambit.dev/mesh=enabled", "--mesh-pod-opt-out=ambit.dev/mesh=disabled",
		"--metrics-addr=:15020", "--ready-addr=:15021", "--admin-addr=127.0.0.1:15000", "--bundle-file=/etc/ambit/bundle/ca.crt"} {
		if !slices.Contains(d.Args, a) {
			t.Errorf("daemon args lack %s: %s", a, args)
		}
	}
	if slices.Contains(d.Args, "--fips") != fips {
		t.Errorf("--fips in args = %v, want %v", !fips, fips)
	}
	quota := find(t, objs, "ResourceQuota", "ambit-critical-pods")
	if !strings.Contains(string(quota.raw), `"scopeName":"PriorityClass"`) || !strings.Contains(string(quota.raw), `"system-node-critical"`) {
		t.Errorf("ResourceQuota not scoped to system-node-critical: %s", quota.raw)
	}
}

// checkRBAC: the daemon only reads, except the status subresource of the
// two CRDs (patch); the CA creates TokenReviews and reads pods. No
// wildcard, no Secrets, nothing else.
func checkRBAC(t *testing.T, objs []object) {
	t.Helper()
	read := []string{"get", "list", "watch"}
	var daemon, ca rbacv1.ClusterRole
	find(t, objs, "ClusterRole", "ambit").decode(t, &daemon)
	find(t, objs, "ClusterRole", "ambit-ca").decode(t, &ca)
	granted := map[string][]string{} // group/resource -> verbs
	for _, r := range daemon.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				granted[g+"/"+res] = append(granted[g+"/"+res], r.Verbs...)
				if strings.HasSuffix(res, "/status") {
					if !slices.Equal(r.Verbs, []string{"patch"}) {
						t.Errorf("daemon may %v %s, want only patch", r.Verbs, res)
					}
				} else if !isSubset(r.Verbs, read) {
					t.Errorf("daemon may %v %s/%s: not read-only", r.Verbs, g, res)
				}
			}
		}
	}
	want := map[string][]string{
		"/pods": read, "/namespaces": read, "/services": read, "/nodes": read,
		"discovery.k8s.io/endpointslices":                 read,
		"security.ambit.dev/authorizationpolicies":        read,
		"security.ambit.dev/peerauthentications":          read,
		"security.ambit.dev/authorizationpolicies/status": {"patch"},
		"security.ambit.dev/peerauthentications/status":   {"patch"},
	}
	for k, v := range want {
		if !slices.Equal(granted[k], v) {
			t.Errorf("daemon verbs on %s: %v, want %v", k, granted[k], v)
		}
	}
	if len(granted) != len(want) {
		t.Errorf("daemon role grants %d resources, want %d: %v", len(granted), len(want), granted)
	}
	// Its own DaemonSet, by name, get only, in the release namespace.
	var own rbacv1.Role
	find(t, objs, "Role", "ambit").decode(t, &own)
	if len(own.Rules) != 1 || !slices.Equal(own.Rules[0].APIGroups, []string{"apps"}) ||
		!slices.Equal(own.Rules[0].Resources, []string{"daemonsets"}) || !slices.Equal(own.Rules[0].Verbs, []string{"get"}) ||
		!slices.Equal(own.Rules[0].ResourceNames, []string{"ambit"}) {
		t.Errorf("daemon Role %+v, want get on daemonsets/ambit only", own.Rules)
	}
	caGranted := map[string][]string{}
	for _, r := range ca.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				caGranted[g+"/"+res] = append(caGranted[g+"/"+res], r.Verbs...)
			}
		}
	}
	if len(caGranted) != 2 || !slices.Equal(caGranted["authentication.k8s.io/tokenreviews"], []string{"create"}) ||
		!slices.Equal(caGranted["/pods"], read) {
		t.Errorf("CA role %v, want tokenreviews create + pods get/list/watch only", caGranted)
	}
	for _, o := range objs {
		if ((o.Kind == "Role" || o.Kind == "RoleBinding") && o.Name != "ambit") || (o.Kind == "ClusterRole" && o.Name != "ambit" && o.Name != "ambit-ca") {
			t.Errorf("unexpected RBAC object %s/%s", o.Kind, o.Name)
		}
		if (o.Kind == "ClusterRole" || o.Kind == "Role") && strings.Contains(string(o.raw), `"*"`) {
			t.Errorf("%s grants a wildcard", o.Name)
		}
	}
}

// checkDevCA: the chart generated a CA root into a Secret, the CA signs with
// it, and the nodes' bundle is that same root.
func checkDevCA(t *testing.T, objs []object) {
	t.Helper()
	var sec corev1.Secret
	find(t, objs, "Secret", "ambit-ca-dev-root").decode(t, &sec)
	if sec.Type != corev1.SecretTypeTLS || len(sec.Data["tls.key"]) == 0 {
		t.Fatalf("dev root Secret type %s, key %d bytes", sec.Type, len(sec.Data["tls.key"]))
	}
	root := parseCertPEM(t, string(sec.Data["tls.crt"]))
	if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 || !strings.Contains(root.Subject.CommonName, "DEVELOPMENT") {
		t.Errorf("dev root: CA %v, usage %v, subject %q", root.IsCA, root.KeyUsage, root.Subject)
	}
	var cm corev1.ConfigMap
	find(t, objs, "ConfigMap", "ambit-trust-bundle").decode(t, &cm)
	if !parseCertPEM(t, cm.Data["ca.crt"]).Equal(root) {
		t.Error("trust bundle is not the generated root")
	}
	checkCADeployment(t, objs, "ambit-ca-dev-root", false)
}

// checkPKICA: the user's Secret is used, no key material is rendered, the
// bundle is the PEM given.
func checkPKICA(t *testing.T, objs []object, bundle string) {
	t.Helper()
	for _, o := range objs {
		if o.Kind == "Secret" {
			t.Errorf("existingSecret mode rendered Secret %s", o.Name)
		}
	}
	var cm corev1.ConfigMap
	find(t, objs, "ConfigMap", "ambit-trust-bundle").decode(t, &cm)
	if strings.TrimSpace(cm.Data["ca.crt"]) != strings.TrimSpace(bundle) {
		t.Errorf("trust bundle %q, want the given PEM", cm.Data["ca.crt"])
	}
	checkCADeployment(t, objs, "corp-intermediate", true) // rendered with fips=true
	var d appsv1.Deployment
	find(t, objs, "Deployment", "ambit-ca").decode(t, &d)
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/ambit-mesh/ambit:9.9.9" {
		t.Errorf("CA image %s, want the tag from values", img)
	}
}

func checkCADeployment(t *testing.T, objs []object, secret string, fips bool) {
	t.Helper()
	var d appsv1.Deployment
	find(t, objs, "Deployment", "ambit-ca").decode(t, &d)
	spec := d.Spec.Template.Spec
	if spec.ServiceAccountName != "ambit-ca" || len(spec.Containers) != 1 {
		t.Fatalf("CA pod: service account %q, %d containers", spec.ServiceAccountName, len(spec.Containers))
	}
	c := spec.Containers[0]
	bin := "/ambit"
	if fips {
		bin = "/ambit-fips" // built against Go's FIPS 140-3 module
	}
	if !slices.Equal(c.Command, []string{bin, "ca"}) {
		t.Errorf("CA command %v, want [%s ca]", c.Command, bin)
	}
	if slices.Contains(c.Args, "--fips") != fips {
		t.Errorf("CA args %v: --fips present %v, want %v", c.Args, !fips, fips)
	}
	for _, a := range []string{"--signing-cert=/etc/ambit/ca/tls.crt", "--signing-key=/etc/ambit/ca/tls.key",
		"--node-service-account=ambit-system/ambit", "--token-audience=ambit-ca", "--ttl=24h"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("CA args lack %s: %v", a, c.Args)
		}
	}
	if len(spec.Volumes) != 1 || spec.Volumes[0].Secret == nil || spec.Volumes[0].Secret.SecretName != secret {
		t.Errorf("CA signing volume %+v, want Secret %s", spec.Volumes, secret)
	}
	if sc := c.SecurityContext; sc == nil || sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 ||
		spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot {
		t.Error("CA must run as non-root without capabilities")
	}
	var svc corev1.Service
	find(t, objs, "Service", "ambit-ca").decode(t, &svc)
	if len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].Port != 15012 {
		t.Errorf("CA service ports %+v", svc.Spec.Ports)
	}
}

func isSubset(a, of []string) bool {
	for _, x := range a {
		if !slices.Contains(of, x) {
			return false
		}
	}
	return true
}

// testRootPEM is a throw-away root standing in for the user's PKI.
func testRootPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "corp root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// checkDashboard: the Grafana dashboard is valid JSON whose panels query
// connections, bytes, denials and certificate expiry.
func checkDashboard(t *testing.T, objs []object) {
	t.Helper()
	var cm corev1.ConfigMap
	find(t, objs, "ConfigMap", "ambit-dashboard").decode(t, &cm)
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["ambit.json"]), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	all := strings.Join(exprs, "\n")
	for _, want := range []string{"ambit_tcp_connections_opened_total", "ambit_tcp_sent_bytes_total", "ambit_tcp_received_bytes_total",
		`ambit_tcp_connections_failed_total{response_flags="DENY"`, "ambit_certificate_expiry_seconds"} {
		if !strings.Contains(all, want) {
			t.Errorf("dashboard %q queries no %s", dash.Title, want)
		}
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard labels %v lack grafana_dashboard=1", cm.Labels)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/e2e/images"
	"github.com/ambit-mesh/ambit/identity/ca"
)

// chartImage is the reference TestChart builds and imports.
const chartImage = "ambit.test/ambit"

// buildChartImage starts building the ambit image in the background (it
// overlaps the cluster start); wait for the result with the returned func.
func buildChartImage(ctx context.Context, dir string) func() (images.Result, error) {
	type res struct {
		r   images.Result
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := images.Build(ctx, images.Options{OutDir: dir, Repository: chartImage, Tag: "e2e"})
		ch <- res{r, err}
	}()
	return func() (images.Result, error) { r := <-ch; return r.r, r.err }
}

// helmInstall proves the chart as a user installs it, on the cluster the
// dry run used: `helm install` succeeds; the CA Deployment (signing with
// the chart's development root, as non-root) becomes Ready; `helm upgrade`
// keeps the development root (lookup); and once the DaemonSet may schedule,
// its init container chains ambit-cni into the node's conflist and copies
// the binary into the node's CNI bin directory.
//
// The daemon itself is TestMesh's subject (with the values this machine's
// emulated nodes need); here the chart runs with its defaults. The DaemonSet
// is held off every node (a nodeSelector) until the CA is Ready, because once
// ambit-cni is in the conflist every new pod's CNI ADD outside the excluded
// namespaces needs a running daemon.
func helmInstall(ctx context.Context, t *testing.T, c *cluster.Cluster, chart string, image func() (images.Result, error)) {
	img, err := image()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ImportImage(ctx, img.Tar); err != nil {
		t.Fatal(err)
	}
	base := []string{"-n", chartNamespace, "--set", "image.repository=" + chartImage, "--set", "image.tag=e2e",
		"--set", "image.pullPolicy=Never", "--set", "ca.devRootDays=2"}
	held := append(base, "--set", "daemon.nodeSelector.ambit\\.test/hold=yes")
	out, err := c.Helm(ctx, append([]string{"install", "ambit", chart}, held...)...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "DEVELOPMENT CA") {
		t.Errorf("helm install NOTES lack the development CA warning:\n%s", out)
	}
	if _, err := c.WaitPods(ctx, chartNamespace, "app.kubernetes.io/name=ambit-ca", 1, cluster.PodReady); err != nil {
		t.Fatalf("CA not Ready: %v\n%s", err, caLogs(ctx, c))
	}
	cs := c.Clientset()
	sec, err := cs.CoreV1().Secrets(chartNamespace).Get(ctx, "ambit-ca-dev-root", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The CA's own loader accepts what the chart generated.
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(crt, sec.Data["tls.crt"], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, sec.Data["tls.key"], 0o600); err != nil {
		t.Fatal(err)
	}
	chain, signer, err := ca.LoadSigningFiles(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.NewIssuer(ca.IssuerConfig{Chain: chain, Key: signer, TTL: time.Hour}); err != nil {
		t.Fatalf("the chart's development root cannot sign: %v", err)
	}
	if logs := caLogs(ctx, c); !strings.Contains(logs, "ambit ca serving") {
		t.Errorf("CA log lacks its start line:\n%s", logs)
	}

	// Upgrade (DaemonSet now allowed on every node): the root is kept.
	if _, err := c.Helm(ctx, append([]string{"upgrade", "ambit", chart}, base...)...); err != nil {
		t.Fatal(err)
	}
	after, err := cs.CoreV1().Secrets(chartNamespace).Get(ctx, "ambit-ca-dev-root", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(after.Data["tls.crt"]) != string(sec.Data["tls.crt"]) || string(after.Data["tls.key"]) != string(sec.Data["tls.key"]) {
		t.Error("helm upgrade replaced the development root")
	}
	cm, err := cs.CoreV1().ConfigMaps(chartNamespace).Get(ctx, "ambit-trust-bundle", metav1.GetOptions{})
	if err != nil || strings.TrimSpace(cm.Data["ca.crt"]) != strings.TrimSpace(string(sec.Data["tls.crt"])) {
		t.Errorf("trust bundle after upgrade is not the root (%v)", err)
	}

	// The init container installs ambit-cni on the node.
	n := c.Nodes[0]
	conf := n.PrivateDir("/etc/cni/net.d")
	bin := filepath.Join(n.PrivateDir("/opt/cni/bin"), "ambit-cni")
	deadline := time.Now().Add(45 * time.Second)
	for {
		entry, berr := chainedEntry(conf)
		_, serr := os.Stat(bin)
		if berr == nil && serr == nil {
			if entry["socketPath"] != "/var/run/ambit/cni.sock" {
				t.Errorf("ambit-cni entry %v, want socketPath /var/run/ambit/cni.sock", entry)
			}
			break
		}
		if time.Now().After(deadline) {
			pods, _ := c.Kubectl(ctx, "get", "pods", "-n", chartNamespace, "-o", "wide")
			t.Fatalf("ambit-cni not installed on %s: conflist %v, binary %v\n%s", n.Name, berr, serr, pods)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// chainedEntry returns ambit-cni's plugin entry from the active conflist in
// dir (the first by name).
func chainedEntry(dir string) (map[string]any, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".conflist") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var list struct {
			Plugins []map[string]any `json:"plugins"`
		}
		if err := json.Unmarshal(b, &list); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		for i, p := range list.Plugins {
			if p["type"] == "ambit-cni" {
				if i != len(list.Plugins)-1 {
					return nil, fmt.Errorf("%s: ambit-cni is plugin %d of %d, want last", e.Name(), i+1, len(list.Plugins))
				}
				return p, nil
			}
		}
		return nil, fmt.Errorf("%s: no ambit-cni entry", e.Name())
	}
	return nil, fmt.Errorf("no .conflist in %s", dir)
}

func caLogs(ctx context.Context, c *cluster.Cluster) string {
	out, _ := c.Kubectl(ctx, "logs", "-n", chartNamespace, "-l", "app.kubernetes.io/name=ambit-ca", "--tail=50")
	return out
}

package cniplugin

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
)

const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],` +
	`"ips":[{"address":"10.88.0.7/16","gateway":"10.88.0.1","interface":0}],"dns":{}}`

// netConf is a chained entry whose daemon socket does not exist: any
// attempt to reach the daemon fails with ErrUnreachable.
func netConf(t *testing.T, exclude ...string) []byte {
	t.Helper()
	conf := map[string]any{
		"cniVersion": "1.0.0", "name": "containerd-net", "type": PluginType,
		"socketPath":     filepath.Join(t.TempDir(), "absent.sock"),
		"timeoutSeconds": 1,
		"prevResult":     json.RawMessage(prevResult),
	}
	if exclude != nil {
		conf["excludeNamespaces"] = exclude
	}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cmdArgs(t *testing.T, stdin []byte, cniArgs string) *skel.CmdArgs {
	t.Helper()
	// Any file opens as "the netns": the request then fails at the socket,
	// which is what the tests tell apart.
	netns := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(netns, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return &skel.CmdArgs{ContainerID: "c0ffee", Netns: netns, IfName: "eth0", Args: cniArgs, StdinData: stdin}
}

// captureStdout runs f with os.Stdout redirected and returns what f wrote.
func captureStdout(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	ferr := f()
	os.Stdout = saved
	w.Close()
	out := <-done
	r.Close()
	return out, ferr
}

func podArgs(ns string) string {
	return "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + ns + ";K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=u1"
}

func TestAddExcludedNamespacePassesWithoutDaemon(t *testing.T) {
	stdin := netConf(t, "ambit-system", "kube-system")
	for _, ns := range []string{"ambit-system", "kube-system"} {
		out, err := captureStdout(t, func() error { return cmdAdd(cmdArgs(t, stdin, podArgs(ns))) })
		if err != nil {
			t.Fatalf("ADD in excluded %s: %v", ns, err)
		}
		var got, want map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("ADD in %s printed %q: %v", ns, out, err)
		}
		json.Unmarshal([]byte(prevResult), &want)
		if g, w := mustJSON(t, got["ips"]), mustJSON(t, want["ips"]); g != w || got["cniVersion"] != "1.0.0" {
			t.Errorf("ADD in %s printed %s, want the prevResult %s", ns, out, prevResult)
		}
	}
}

func TestAddOtherNamespacesNeedTheDaemon(t *testing.T) {
	stdin := netConf(t, "ambit-system", "kube-system")
	for name, cniArgs := range map[string]string{
		"other namespace":    podArgs("shop"),
		"prefix of excluded": podArgs("kube-system-extra"),
		"empty namespace":    podArgs(""),
		"no K8S args":        "",
		"garbage args":       "K8S_POD_NAMESPACE",
	} {
		out, err := captureStdout(t, func() error { return cmdAdd(cmdArgs(t, stdin, cniArgs)) })
		if !errors.Is(err, ErrUnreachable) {
			t.Errorf("%s: ADD = %v, want ErrUnreachable", name, err)
		}
		if out != "" {
			t.Errorf("%s: failed ADD printed %q", name, out)
		}
	}
	// No list at all: today's behaviour for every namespace.
	if _, err := captureStdout(t, func() error { return cmdAdd(cmdArgs(t, netConf(t), podArgs("kube-system"))) }); !errors.Is(err, ErrUnreachable) {
		t.Errorf("ADD without excludeNamespaces = %v, want ErrUnreachable", err)
	}
}

func TestCheckAndDelWithExclusions(t *testing.T) {
	stdin := netConf(t, "kube-system")
	if err := cmdCheck(cmdArgs(t, stdin, podArgs("kube-system"))); err != nil {
		t.Errorf("CHECK in excluded namespace: %v", err)
	}
	if err := cmdCheck(cmdArgs(t, stdin, podArgs("shop"))); !errors.Is(err, ErrUnreachable) {
		t.Errorf("CHECK in shop = %v, want ErrUnreachable", err)
	}
	// DEL is best effort everywhere: an unreachable daemon is not an error.
	for _, ns := range []string{"kube-system", "shop"} {
		if err := cmdDel(cmdArgs(t, stdin, podArgs(ns))); err != nil {
			t.Errorf("DEL in %s: %v", ns, err)
		}
	}
}

func TestAddExcludedStillNeedsPrevResult(t *testing.T) {
	var conf map[string]any
	json.Unmarshal(netConf(t, "kube-system"), &conf)
	delete(conf, "prevResult")
	stdin, _ := json.Marshal(conf)
	_, err := captureStdout(t, func() error { return cmdAdd(cmdArgs(t, stdin, podArgs("kube-system"))) })
	if err == nil || !strings.Contains(err.Error(), "no prevResult") {
		t.Errorf("ADD without prevResult = %v, want the chaining error", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A socket file left by a daemon that died (nothing listens) is as good as
// none: ADD in a namespace the daemon decides fails (retried by the
// runtime, never uncaptured); ADD in an excluded namespace, where the
// daemon's own pod starts, passes.
func TestAddWithStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cni.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket file: %v", err)
	}
	var conf map[string]any
	if err := json.Unmarshal(netConf(t, "ambit-system"), &conf); err != nil {
		t.Fatal(err)
	}
	conf["socketPath"] = sock
	stdin, _ := json.Marshal(conf)
	if _, err := captureStdout(t, func() error { return cmdAdd(cmdArgs(t, stdin, podArgs("shop"))) }); !errors.Is(err, ErrUnreachable) {
		t.Errorf("ADD in shop with a dead daemon = %v, want ErrUnreachable", err)
	}
	out, err := captureStdout(t, func() error { return cmdAdd(cmdArgs(t, stdin, podArgs("ambit-system"))) })
	if err != nil || !strings.Contains(out, "10.88.0.7") {
		t.Errorf("ADD of the daemon's own pod with a dead daemon = %q, %v; want the previous result", out, err)
	}
}

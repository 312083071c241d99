// Package cniplugin is the ambit-cni chained CNI plugin (spec 1.0/1.1,
// 0.4.0 configs accepted) and its installer. On ADD it sends the pod and
// its netns (as a descriptor, SCM_RIGHTS) to the node daemon and waits for
// the daemon to set up capture: if the daemon is unreachable or fails, ADD
// fails and the runtime retries, so a pod that should be captured never
// runs uncaptured. The previous result passes through unchanged.
//
// Namespaces listed in the entry's excludeNamespaces (ambit's own and, by
// default, kube-system) are passed through without contacting the daemon:
// the daemon's own pod and the cluster DNS are set up by the same CNI
// chain, so after a node reboot, or while the daemon restarts, they could
// otherwise never start. A pod whose namespace is unknown (no K8S_* args)
// is treated like any other and needs the daemon.
//
// The installer (Install, Uninstall) edits the active conflist in place,
// keeping the rest of it byte for byte, and replaces files atomically. The
// entry stays while no daemon runs (restart, pod deleted, upgrade): pods
// outside the excluded namespaces then wait for the daemon. Only a daemon
// whose DaemonSet is gone uninstalls (docs/lifecycle.md). The node daemon
// runs a Reconciler (KeepInstalled) that puts the binary and the entry back
// whenever they go missing (other CNI plugins' installers rewrite the
// conflist without ambit's entry). A
// pass reads one directory, one small conflist and stats one binary; the
// binary is hashed only when its size, mtime or inode changed. Measured: a
// pass that finds everything in place costs 42-60 µs and 98 allocations
// (7 KB), `go test -run '^$' -bench ReconcileIntact -benchmem -count=3
// ./redirect/cniplugin/` on the 2-core development VM, i.e. about 0.003%
// of a core at the default 2 s interval.
package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ambit-mesh/ambit/redirect/cnimsg"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultSocket is where the node daemon listens.
const DefaultSocket = "/var/run/ambit/cni.sock"

// NetConf is ambit-cni's entry in a conflist.
type NetConf struct {
	types.NetConf
	// SocketPath of the daemon. Optional: DefaultSocket.
	SocketPath string `json:"socketPath,omitempty"`
	// TimeoutSeconds bounds the wait for the daemon. Optional: 20.
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// ExcludeNamespaces: ADD and CHECK of pods in these namespaces pass the
	// previous result through without contacting the daemon. Optional.
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty"`
}

// excluded reports whether the pod's namespace (K8S_POD_NAMESPACE in
// CNI_ARGS) is one the daemon is not asked about. No namespace: false.
func (c *NetConf) excluded(args *skel.CmdArgs) bool {
	ns := k8sArgs(args.Args)["K8S_POD_NAMESPACE"]
	return ns != "" && slices.Contains(c.ExcludeNamespaces, ns)
}

// Supported lists the spec versions the plugin accepts.
var Supported = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// Funcs are the CNI commands for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck}
}

func parseConf(args *skel.CmdArgs) (*NetConf, *current.Result, error) {
	var conf NetConf
	if err := json.Unmarshal(args.StdinData, &conf); err != nil {
		return nil, nil, fmt.Errorf("ambit-cni: parse config: %w", err)
	}
	if conf.SocketPath == "" {
		conf.SocketPath = DefaultSocket
	}
	if conf.TimeoutSeconds <= 0 {
		conf.TimeoutSeconds = 20
	}
	if conf.RawPrevResult == nil {
		return &conf, nil, nil
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return nil, nil, fmt.Errorf("ambit-cni: parse prevResult: %w", err)
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, nil, fmt.Errorf("ambit-cni: convert prevResult: %w", err)
	}
	return &conf, res, nil
}

// k8sArgs reads the K8S_* keys runtimes put into CNI_ARGS.
func k8sArgs(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func podOf(args *skel.CmdArgs, res *current.Result) cnimsg.Pod {
	a := k8sArgs(args.Args)
	p := cnimsg.Pod{Namespace: a["K8S_POD_NAMESPACE"], Name: a["K8S_POD_NAME"], UID: a["K8S_POD_UID"],
		ContainerID: args.ContainerID, Interface: args.IfName, NetnsPath: args.Netns}
	if res != nil {
		for _, ip := range res.IPs {
			if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
				p.IPs = append(p.IPs, a.Unmap())
			}
			if g, ok := netip.AddrFromSlice(ip.Gateway); ok && ip.Gateway != nil {
				p.Gateways = append(p.Gateways, g.Unmap())
			}
		}
	}
	return p
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, res, err := parseConf(args)
	if err != nil {
		return err
	}
	if res == nil {
		return errors.New("ambit-cni: no prevResult: chain ambit-cni after the plugin that assigns the pod's IPs")
	}
	if conf.excluded(args) {
		return types.PrintResult(conf.PrevResult, conf.CNIVersion)
	}
	pod := podOf(args, res)
	if _, err := call(conf, cnimsg.Request{Op: cnimsg.OpAdd, Pod: pod}, args.Netns); err != nil {
		return err
	}
	return types.PrintResult(conf.PrevResult, conf.CNIVersion)
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, res, err := parseConf(args)
	if err != nil {
		return err
	}
	if conf.excluded(args) {
		return nil
	}
	if res == nil {
		return errors.New("ambit-cni: CHECK without prevResult")
	}
	_, err = call(conf, cnimsg.Request{Op: cnimsg.OpCheck, Pod: podOf(args, res)}, args.Netns)
	return err
}

// cmdDel removes capture. A daemon that cannot be reached is not an error:
// DEL must not block pod teardown, and the daemon removes the state of
// pods whose namespace is gone when it starts (Recover).
func cmdDel(args *skel.CmdArgs) error {
	conf, _, err := parseConf(args)
	if err != nil {
		return err
	}
	pod := cnimsg.Pod{ContainerID: args.ContainerID, Interface: args.IfName}
	_, err = call(conf, cnimsg.Request{Op: cnimsg.OpDel, Pod: pod}, "")
	if errors.Is(err, ErrUnreachable) {
		fmt.Fprintf(os.Stderr, "ambit-cni: DEL %s: %v (state is removed when the daemon restarts)\n", args.ContainerID, err)
		return nil
	}
	return err
}

func call(conf *NetConf, req cnimsg.Request, netnsPath string) (*cnimsg.Response, error) {
	timeout := time.Duration(conf.TimeoutSeconds) * time.Second
	return Call(conf.SocketPath, req, netnsPath, timeout)
}

// Command ambit-cni is ambit's chained CNI plugin. Invoked by a container
// runtime it speaks CNI (see package redirect/cniplugin); `ambit-cni
// install` and `ambit-cni uninstall` put it into / take it out of the
// host's CNI bin directory and active conflist.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ambit-mesh/ambit/redirect/cniplugin"
	"github.com/containernetworking/cni/pkg/skel"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "install" || os.Args[1] == "uninstall") {
		os.Exit(installMain(os.Args[1], os.Args[2:]))
	}
	skel.PluginMainFuncs(cniplugin.Funcs(), cniplugin.Supported, "ambit-cni: ambit's chained CNI plugin")
}

func installMain(cmd string, args []string) int {
	fs := flag.NewFlagSet("ambit-cni "+cmd, flag.ContinueOnError)
	var o cniplugin.InstallOptions
	fs.StringVar(&o.BinDir, "cni-bin-dir", "/opt/cni/bin", "host CNI bin directory")
	fs.StringVar(&o.ConfDir, "cni-conf-dir", "/etc/cni/net.d", "host CNI config directory")
	fs.StringVar(&o.SocketPath, "socket", cniplugin.DefaultSocket, "node daemon socket written into the plugin entry")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if cmd == "install" {
		err = cniplugin.Install(o)
	} else {
		err = cniplugin.Uninstall(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

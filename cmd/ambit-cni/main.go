// Command ambit-cni is ambit's chained CNI plugin. Invoked by a container
// runtime it speaks CNI (see package redirect/cniplugin); `ambit-cni
// install` and `ambit-cni uninstall` put it into / take it out of the
// host's CNI bin directory and active conflist.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

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
	var exclude, stopFile string
	fs.StringVar(&o.BinDir, "cni-bin-dir", "/opt/cni/bin", "host CNI bin directory")
	fs.StringVar(&o.ConfDir, "cni-conf-dir", "/etc/cni/net.d", "host CNI config directory")
	if cmd == "install" {
		fs.StringVar(&o.SocketPath, "socket", cniplugin.DefaultSocket, "node daemon socket written into the plugin entry")
		fs.StringVar(&exclude, "exclude-namespaces", "", "comma-separated namespaces whose pods start without the node daemon (written into the plugin entry)")
	} else {
		fs.StringVar(&stopFile, "stop-file", "", "stop file of the node daemon's reconciler in this container (cniplugin.StopReconciler): written first, so the daemon does not put the plugin back")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ambit-cni %s: unexpected arguments %q\n", cmd, fs.Args())
		return 2
	}
	var err error
	if cmd == "install" {
		if o.ExcludeNamespaces, err = cniplugin.ParseNamespaceList(exclude); err != nil {
			fmt.Fprintf(os.Stderr, "ambit-cni install: --exclude-namespaces: %v\n", err)
			return 2
		}
		err = cniplugin.Install(o)
	} else {
		// Uninstall even if the reconciler could not be told: a release
		// being deleted must not leave the plugin behind.
		if stopFile != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = cniplugin.StopReconciler(ctx, stopFile)
			cancel()
		}
		err = errors.Join(err, cniplugin.Uninstall(o))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

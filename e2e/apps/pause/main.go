// Command pause is the pod sandbox ("pause") process of ambit's e2e cluster:
// it holds the pod's namespaces open, reaps orphaned children when it is PID 1
// of a shared PID namespace, and exits on SIGTERM or SIGINT. It is built into
// an image by the harness (cluster.BuildGoImage), so no registry is needed.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

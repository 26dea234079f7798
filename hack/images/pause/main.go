// Command pause is the pod sandbox process of the local cluster
// (hack/cluster): the image containerd's sandbox_image names, built by
// hack/images -pause as a static binary. As PID 1 of a pod's PID namespace
// it waits for SIGINT or SIGTERM and reaps the children it inherits, like
// Kubernetes' own pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
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

// Command lmcluster runs the local single-node Kubernetes cluster of
// package localcluster. hack/cluster/up.sh and down.sh (make cluster-up,
// make cluster-down) build it and call it after installing and building
// what it needs.
//
//	lmcluster up --kube-dir DIR --pause-image TAR   start the cluster (root)
//	lmcluster down [--keep-logs DIR]                tear it down and check the host (root)
//	lmcluster status                                is it up? (exit 0 if so)
//	lmcluster snapshot FILE                         record the host (for comparisons)
//	lmcluster diff BEFORE AFTER                     compare two records
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/lanmonitor/lanmonitor/hack/cluster/localcluster"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "cluster: "+format+"\n", args...) }
	var err error
	switch os.Args[1] {
	case "up":
		fs := flag.NewFlagSet("up", flag.ExitOnError)
		kubeDir := fs.String("kube-dir", "", "directory of etcd and the Kubernetes binaries (hack/tools.sh cluster)")
		pause := fs.String("pause-image", "", "the pause image tarball (hack/images -pause)")
		fs.Parse(os.Args[2:])
		if *kubeDir == "" || *pause == "" {
			fmt.Fprintln(os.Stderr, "up: --kube-dir and --pause-image are required")
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = localcluster.Up(ctx, localcluster.UpOptions{KubeDir: *kubeDir, PauseImageTar: *pause, Logf: logf})
		if errors.Is(err, localcluster.ErrAlreadyUp) {
			logf("%v", err)
			os.Exit(0)
		}
		if err == nil {
			fmt.Printf("export KUBECONFIG=%s   # or: . %s\n", localcluster.AdminKubeconfig, localcluster.EnvFile)
		}
	case "down":
		fs := flag.NewFlagSet("down", flag.ExitOnError)
		keep := fs.String("keep-logs", "", "copy the cluster's logs to this directory first")
		fs.Parse(os.Args[2:])
		err = localcluster.Down(localcluster.DownOptions{KeepLogs: *keep, Logf: logf})
		if errors.Is(err, localcluster.ErrNotUp) {
			logf("%v", err)
			os.Exit(0)
		}
	case "status":
		if st, ok := localcluster.Running(); ok {
			fmt.Printf("up since %s, node %s (%s); KUBECONFIG=%s\n", st.Started.Format("15:04:05"), st.NodeName, st.NodeIP, localcluster.AdminKubeconfig)
			return
		}
		fmt.Println("not running")
		os.Exit(1)
	case "snapshot":
		if len(os.Args) != 3 {
			usage()
		}
		var s *localcluster.Snapshot
		if s, err = localcluster.TakeSnapshot(); err == nil {
			err = localcluster.SaveSnapshot(os.Args[2], s)
		}
	case "diff":
		if len(os.Args) != 4 {
			usage()
		}
		var a, b *localcluster.Snapshot
		if a, err = localcluster.LoadSnapshot(os.Args[2]); err == nil {
			if b, err = localcluster.LoadSnapshot(os.Args[3]); err == nil {
				if d := localcluster.Diff(a, b); len(d) > 0 {
					fmt.Print(localcluster.FormatDiff(d))
					os.Exit(1)
				}
			}
		}
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: lmcluster up --kube-dir DIR --pause-image TAR | down [--keep-logs DIR] | status | snapshot FILE | diff BEFORE AFTER`)
	os.Exit(2)
}

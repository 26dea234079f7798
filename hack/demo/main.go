// Command demo runs lanmonitor on a lab LAN of network namespaces against a
// real kube-apiserver (package internal/demo), for `make demo`,
// `make demo-up` and `make demo-down`:
//
//	demo run    bring it up, print `kubectl get lanmonitors,ipblocks,lanmonitornodes`
//	            every report interval, tear everything down on Ctrl-C
//	demo up     bring it up in the background, print the KUBECONFIG to use, return
//	demo down   tear the background demo down
//
// It needs root (network namespaces, XDP). State lives in /run/lanmonitor-demo.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/lanmonitor/lanmonitor/internal/demo"
	"github.com/lanmonitor/lanmonitor/internal/lab"
)

const stateDir = "/run/lanmonitor-demo"

func main() {
	root := &cobra.Command{Use: "demo", Short: "lanmonitor on a lab LAN with a real kube-apiserver", SilenceUsage: true}
	root.AddCommand(
		&cobra.Command{Use: "run", Short: "Bring the demo up, watch it, tear it down on Ctrl-C", RunE: func(*cobra.Command, []string) error { return run() }},
		&cobra.Command{Use: "up", Short: "Bring the demo up in the background", RunE: func(*cobra.Command, []string) error { return up() }},
		&cobra.Command{Use: "down", Short: "Tear the background demo down", RunE: func(*cobra.Command, []string) error { return down() }},
		&cobra.Command{Use: "serve", Hidden: true, RunE: func(*cobra.Command, []string) error { return serve() }},
	)
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
}

// running returns the PID of a live demo, or 0.
func running() int {
	raw, err := os.ReadFile(filepath.Join(stateDir, "pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// claim makes sure no other demo runs, and records this process.
func claim() error {
	if pid := running(); pid != 0 {
		return fmt.Errorf("a demo is already running (pid %d); use it (export KUBECONFIG=%s) or run `make demo-down` first", pid, filepath.Join(stateDir, "kubeconfig"))
	}
	os.RemoveAll(stateDir)
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(stateDir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

func options() (demo.Options, error) {
	repo, err := os.Getwd()
	if err != nil {
		return demo.Options{}, err
	}
	tool := func(env, target string) (string, error) {
		if v := os.Getenv(env); v != "" {
			return v, nil
		}
		out, err := exec.Command(filepath.Join(repo, "hack/tools.sh"), target).Output()
		if err != nil {
			return "", fmt.Errorf("hack/tools.sh %s: %w", target, err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return lines[len(lines)-1], nil
	}
	assets, err := tool("KUBEBUILDER_ASSETS", "controlplane")
	if err != nil {
		return demo.Options{}, err
	}
	helm, err := tool("HELM", "helm")
	if err != nil {
		return demo.Options{}, err
	}
	return demo.Options{Repo: repo, Bin: filepath.Join(repo, "bin"), Assets: assets, Helm: helm, StateDir: stateDir, Prefix: "lmdemo-", Logf: logf}, nil
}

// bringUp claims the demo and starts it; on error nothing is left.
func bringUp(ctx context.Context) (*demo.Demo, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the demo needs root (network namespaces, XDP): run `sudo make demo`")
	}
	if err := claim(); err != nil {
		return nil, err
	}
	o, err := options()
	if err != nil {
		os.RemoveAll(stateDir)
		return nil, err
	}
	lab.RemoveStale(o.Prefix) // namespaces of a demo that was killed
	d, err := demo.Up(ctx, o)
	if err != nil {
		os.RemoveAll(stateDir)
		return nil, err
	}
	return d, nil
}

func tearDown(d *demo.Demo) error {
	logf("tearing down: LanMonitors deleted (agents release the interfaces), processes stopped, lab namespaces and pins removed")
	err := d.Down()
	os.RemoveAll(stateDir)
	if err == nil {
		logf("done: nothing left behind")
	}
	return err
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := bringUp(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("\nlanmonitor demo is up. In another shell:\n  export KUBECONFIG=%s\n  kubectl get lanmonitors,ipblocks,lanmonitornodes\n%s\nCtrl-C tears it down.\n\n", d.Kubeconfig, agentAPIs(d))
	tick := time.NewTicker(10 * time.Second) // the samples' reportInterval
	defer tick.Stop()
	for {
		fmt.Printf("--- %s: kubectl get lanmonitors,ipblocks,lanmonitornodes\n", time.Now().Format(time.TimeOnly))
		if err := printTables(ctx, d); err != nil && ctx.Err() == nil {
			logf("get: %v", err)
		}
		select {
		case <-ctx.Done():
			return tearDown(d)
		case <-tick.C:
		}
	}
}

// up starts `demo serve` detached and waits until it is ready.
func up() error {
	if pid := running(); pid != 0 {
		return fmt.Errorf("a demo is already running (pid %d): export KUBECONFIG=%s, or `make demo-down` first", pid, filepath.Join(stateDir, "kubeconfig"))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := "/tmp/lanmonitor-demo.log"
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(self, "serve")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		if _, err := os.Stat(filepath.Join(stateDir, "ready")); err == nil {
			apis, _ := os.ReadFile(filepath.Join(stateDir, "apis"))
			fmt.Printf("lanmonitor demo is up (pid %d, log %s).\n  export KUBECONFIG=%s\n  kubectl get lanmonitors,ipblocks,lanmonitornodes\n%s`make demo-down` tears it down.\n",
				cmd.Process.Pid, logPath, filepath.Join(stateDir, "kubeconfig"), apis)
			return nil
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("demo failed to start (%v):\n%s", err, out)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serve is the background demo: up, ready, wait for SIGTERM, down.
func serve() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := bringUp(ctx)
	if err != nil {
		logf("%v", err)
		return err
	}
	if err := os.WriteFile(filepath.Join(stateDir, "apis"), []byte(agentAPIs(d)+"\n"), 0o644); err != nil {
		d.Down()
		return err
	}
	if err := os.WriteFile(filepath.Join(stateDir, "ready"), []byte(d.Kubeconfig+"\n"), 0o644); err != nil {
		d.Down()
		return err
	}
	logf("ready")
	<-ctx.Done()
	return tearDown(d)
}

func down() error {
	pid := running()
	if pid == 0 {
		fmt.Println("no demo is running")
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("demo (pid %d) did not stop within 2 minutes; see /tmp/lanmonitor-demo.log", pid)
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Println("demo stopped; nothing left behind")
	return nil
}

// agentAPIs says where each node's agent serves its local API.
func agentAPIs(d *demo.Demo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Dashboards (HTTPS, self-signed certificates: accept them in the browser; sign in with the token in %s):", d.ViewerTokenFile)
	fmt.Fprintf(&b, "\n  cluster: %s/", d.ClusterDashboard)
	for _, n := range d.Nodes {
		fmt.Fprintf(&b, "\n  %s: %s/", n.Name, n.API)
	}
	b.WriteString("\nEach node's agent API (talkers, stats, blocks, metrics), with the same token:")
	for _, n := range d.Nodes {
		fmt.Fprintf(&b, "\n  %s: curl -k -H \"Authorization: Bearer $(cat %s)\" %s/api/v1/talkers", n.Name, d.ViewerTokenFile, n.API)
	}
	return b.String()
}

// printTables prints what `kubectl get lanmonitors,ipblocks,lanmonitornodes`
// prints, from the API server's Table rendering (the printer columns of
// the CRDs), so that the demo needs no kubectl.
func printTables(ctx context.Context, d *demo.Demo) error {
	cfg := rest.CopyConfig(d.Config)
	cfg.GroupVersion = &schema.GroupVersion{Group: "lanmonitor.io", Version: "v1alpha1"}
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return err
	}
	for i, res := range []string{"lanmonitors", "ipblocks", "lanmonitornodes"} {
		raw, err := rc.Get().Resource(res).SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").Do(ctx).Raw()
		if err != nil {
			return fmt.Errorf("%s: %w", res, err)
		}
		var table metav1.Table
		if err := json.Unmarshal(raw, &table); err != nil {
			return fmt.Errorf("%s: %w", res, err)
		}
		if i > 0 {
			fmt.Println()
		}
		if len(table.Rows) == 0 {
			fmt.Printf("No %s.\n", res)
			continue
		}
		singular := strings.TrimSuffix(res, "s")
		p := printers.NewTablePrinter(printers.PrintOptions{WithKind: true, Kind: schema.GroupKind{Group: "lanmonitor.io", Kind: singular}})
		if err := p.PrintObj(&table, os.Stdout); err != nil {
			return err
		}
	}
	fmt.Println()
	return nil
}

package agent

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/internal/lab"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

// BenchmarkAgentIdleCPU measures what an idle node agent costs: the real
// agent in Kubernetes mode against a real API server, 100,000 blocked
// prefixes (100 IPBlocks of 1,000 CIDRs), 65,536 tracked sources, a 10 s
// report interval and no traffic, CPU time from /proc/PID/stat over
// LANMONITOR_BENCH_WINDOW (default 20 s; the target is stated over
// a minute: LANMONITOR_BENCH_WINDOW=60s). Target: under 1% of a core.
func BenchmarkAgentIdleCPU(b *testing.B) {
	_, node, host, pinRoot := benchLAN(b)
	env, err := testenv.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { env.Stop() })
	ctx := context.Background()
	prefixes := benchPrefixes(100_000, 7)
	for i := range 100 {
		ipb := &v1alpha1.IPBlock{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%03d", i)}}
		for _, p := range prefixes[i*1000 : (i+1)*1000] {
			ipb.Spec.CIDRs = append(ipb.Spec.CIDRs, p.String())
		}
		if err := env.Client.Create(ctx, ipb); err != nil {
			b.Fatal(err)
		}
	}
	lmn := &v1alpha1.LanMonitorNode{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Spec: v1alpha1.LanMonitorNodeSpec{
			Interfaces: []v1alpha1.NodeInterfaceSpec{{Monitor: "lab", Interface: "lan0", Promiscuous: true, XDPMode: v1alpha1.XDPModeAuto,
				TopN: 10, ReportInterval: metav1.Duration{Duration: 10 * time.Second}, MaxTrackedSources: 131072}},
		},
	}
	if err := env.Client.Create(ctx, lmn); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "lanmonitor-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/lanmonitor-agent").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	window := eventStreamWindow(b)
	for b.Loop() {
		cmd := exec.Command(bin, "kubernetes", "--node-name", "node-a", "--kubeconfig", env.WriteKubeconfig(b, dir),
			"--netns", node.Path, "--pin-root", pinRoot, "--listen", "127.0.0.1:0", "--max-prefixes", "262144")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := lab.Start(cmd); err != nil {
			b.Fatal(err)
		}
		applied := func() bool {
			var got v1alpha1.LanMonitorNode
			if err := env.Client.Get(ctx, client.ObjectKey{Name: "node-a"}, &got); err != nil {
				b.Fatal(err)
			}
			st := got.Status
			return len(st.Interfaces) == 1 && st.Interfaces[0].Attached && len(st.IPBlocks) == 100
		}
		deadline := time.Now().Add(2 * time.Minute)
		for !applied() {
			if time.Now().After(deadline) {
				b.Fatal("the agent did not apply the 100 IPBlocks in 2 minutes")
			}
			time.Sleep(100 * time.Millisecond)
		}
		sendSources(b, host, 65536)
		// Settle: a report of the 65,536 sources, their status write, the
		// garbage of the start given back.
		time.Sleep(25 * time.Second)
		cpu0, t0 := procCPU(b, cmd.Process.Pid), time.Now()
		time.Sleep(window)
		cpu1, elapsed := procCPU(b, cmd.Process.Pid), time.Since(t0)
		rss, _ := procMemory(b, cmd.Process.Pid)
		b.ReportMetric((cpu1-cpu0)/elapsed.Seconds()*100, "cpu-%-idle")
		b.ReportMetric(rss/(1<<20), "MiB-rss")
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
}

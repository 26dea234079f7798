package agent_test

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/internal/lab"
)

// TestKubernetesMode runs the real agent in Kubernetes mode for a lab node
// against a real API server, with the test acting as the controller: a
// LanMonitorNode spec change reaches the XDP maps, and the counts reach the
// LanMonitorNode status exactly. Dropping the interface from the spec
// releases it.
func TestKubernetesMode(t *testing.T) {
	l := newLAN(t, lanOptions{})
	env := apiServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client

	ipb := &v1alpha1.IPBlock{ObjectMeta: metav1.ObjectMeta{Name: "scanners"}, Spec: v1alpha1.IPBlockSpec{CIDRs: []string{blockedSrc}}}
	if err := c.Create(ctx, ipb); err != nil {
		t.Fatal(err)
	}
	lmn := &v1alpha1.LanMonitorNode{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Spec: v1alpha1.LanMonitorNodeSpec{
			Interfaces: []v1alpha1.NodeInterfaceSpec{{Monitor: "lab", Interface: "lan0", Promiscuous: true, XDPMode: v1alpha1.XDPModeAuto,
				TopN: 5, ReportInterval: metav1.Duration{Duration: time.Second}, MaxTrackedSources: 4096}},
		},
	}
	if err := c.Create(ctx, lmn); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	bin := agentBinary(t, "dev")
	p := runAgent(t, exec.Command(bin, "kubernetes", "--node-name", "node-a", "--kubeconfig", env.WriteKubeconfig(t, dir),
		"--netns", l.node.Path, "--pin-root", l.pinRoot, "--listen", "127.0.0.1:0", "--log-level", "debug"))

	get := func() *v1alpha1.LanMonitorNode {
		var got v1alpha1.LanMonitorNode
		if err := c.Get(ctx, client.ObjectKey{Name: "node-a"}, &got); err != nil {
			t.Fatal(err)
		}
		return &got
	}
	waitFor(t, 30*time.Second, "the interface attached and the IPBlock applied in the status", func() bool {
		st := get().Status
		return len(st.Interfaces) == 1 && st.Interfaces[0].Attached && len(st.IPBlocks) == 1 && st.IPBlocks[0].Generation == ipb.Generation
	})
	if attached, _, _ := xdpState(t, l.node, "lan0"); !attached {
		t.Fatal("status says attached, the kernel does not")
	}

	// Counts reach the status exactly.
	for range 6 {
		l.send(t, udp(blockedSrc, 30))
	}
	for range 4 {
		l.send(t, udp(allowedSrc, 30))
	}
	waitFor(t, 10*time.Second, "exact counts in the status", func() bool {
		st := get().Status
		return len(st.Interfaces) == 1 && st.Interfaces[0].Totals.Packets == 10 && st.Interfaces[0].Totals.Dropped == 6 &&
			len(st.IPBlocks) == 1 && st.IPBlocks[0].DroppedPackets == 6 && st.IPBlocks[0].MatchedPackets == 6
	})
	st := get().Status
	talkers := map[string]int64{}
	for _, tk := range st.Interfaces[0].TopTalkers {
		talkers[tk.Address] = tk.Packets
	}
	if talkers[blockedSrc] != 6 || talkers[allowedSrc] != 4 || st.Interfaces[0].XDPMode != v1alpha1.XDPModeNative {
		t.Fatalf("status talkers %v mode %s: want %s 6, %s 4, Native", talkers, st.Interfaces[0].XDPMode, blockedSrc, allowedSrc)
	}

	// Nothing changes once the rates have settled to zero: no writes.
	time.Sleep(2500 * time.Millisecond)
	rv := get().ResourceVersion
	time.Sleep(3 * time.Second)
	if now := get().ResourceVersion; now != rv {
		t.Fatalf("status written while nothing changed (resourceVersion %s -> %s)", rv, now)
	}

	// A spec change: the IPBlock now also covers the allowed source.
	ipb.Spec.CIDRs = append(ipb.Spec.CIDRs, allowedSrc)
	if err := c.Update(ctx, ipb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the new generation applied", func() bool {
		st := get().Status
		return len(st.IPBlocks) == 1 && st.IPBlocks[0].Generation == ipb.Generation
	})
	rx, err := l.node.Receiver("lan0")
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	f := udp(allowedSrc, 30)
	passed := rx.Count(func(fr lab.Frame) bool { return string(fr.Data) == string(f) })
	l.send(t, f)
	waitFor(t, 10*time.Second, "the drop of the newly blocked source in the status", func() bool {
		st := get().Status
		return len(st.IPBlocks) == 1 && st.IPBlocks[0].DroppedPackets == 7
	})
	if passed.N() != 0 {
		t.Fatal("the newly blocked source reached the node after its generation was reported applied")
	}

	// The monitor no longer selects the node: released, as found.
	latest := get()
	latest.Spec.Interfaces = nil
	if err := c.Update(ctx, latest); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the interface released", func() bool {
		attached, _, _ := xdpState(t, l.node, "lan0")
		flag, _ := promisc(t, l.node, "lan0")
		return !attached && !flag && len(get().Status.Interfaces) == 0
	})
	if entries, _ := os.ReadDir(l.pinRoot); len(entries) != 0 {
		t.Fatalf("pins left after release: %v", entries)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

package agent_test

import (
	"context"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lanmonitor/lanmonitor/agent"
	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

var kubeListenRE = regexp.MustCompile(`msg="kubernetes agent running".* listen=(\S+) scheme=(\S+)`)

// startKubeAgent runs `lanmonitor-agent kubernetes` for node-a on the
// node's lan0 without waiting for anything; waitAPI finds its address.
func startKubeAgent(t *testing.T, l *lan, bin, kubeconfig, token string) *agentProc {
	t.Helper()
	p := runAgent(t, exec.Command(bin, "kubernetes", "--node-name", "node-a", "--kubeconfig", kubeconfig,
		"--netns", l.node.Path, "--pin-root", l.pinRoot, "--listen", "127.0.0.1:0", "--log-level", "debug"))
	p.token = token
	return p
}

// waitAPI waits until the Kubernetes-mode agent serves its API.
func (p *agentProc) waitAPI(timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := kubeListenRE.FindStringSubmatch(p.logs.String()); m != nil {
			p.api = m[2] + "://" + m[1]
			return
		}
		select {
		case <-p.exited:
			p.t.Fatalf("agent exited: %v", p.err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("agent did not serve its API in %v", timeout)
}

// TestKubernetesRestartWhileAPIServerDown: the agent is killed (kill -9)
// while it enforces IPBlocks A (source X) and B (source Y); B is deleted
// while no agent runs, then kube-apiserver goes down and the agent starts
// again. Until it can sync, the pinned datapath keeps enforcing both A and
// B: the new agent neither detaches nor wipes anything. The first sync
// after the API server is back removes B's entry (Y passes from then on)
// and never takes A's away for a moment (not one frame of X passes); the
// allowed source Z loses no frame at any time, and every counter carries
// on exactly across the restart.
func TestKubernetesRestartWhileAPIServerDown(t *testing.T) {
	const srcX, srcY, srcZ = blockedSrc, "198.18.0.67", allowedSrc
	const X, Y, Z = 0, 1, 2
	l := newLAN(t, lanOptions{})
	env := apiServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.Client

	blockA := &v1alpha1.IPBlock{ObjectMeta: metav1.ObjectMeta{Name: "block-a"}, Spec: v1alpha1.IPBlockSpec{CIDRs: []string{srcX + "/32"}}}
	blockB := &v1alpha1.IPBlock{ObjectMeta: metav1.ObjectMeta{Name: "block-b"}, Spec: v1alpha1.IPBlockSpec{CIDRs: []string{srcY + "/32"}}}
	for _, b := range []*v1alpha1.IPBlock{blockA, blockB} {
		if err := c.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
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
	token := env.Token(t, "restart-viewer", rbacv1.PolicyRule{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"lanmonitornodes/traffic"}, Verbs: []string{"get"}})
	kubeconfig := env.WriteKubeconfig(t, t.TempDir())
	bin := agentBinary(t, "dev")
	get := func() *v1alpha1.LanMonitorNode {
		var got v1alpha1.LanMonitorNode
		if err := c.Get(ctx, client.ObjectKey{Name: "node-a"}, &got); err != nil {
			t.Fatal(err)
		}
		return &got
	}
	applied := func(names ...string) bool {
		st := get().Status
		if len(st.Interfaces) != 1 || !st.Interfaces[0].Attached || len(st.IPBlocks) != len(names) {
			return false
		}
		for _, n := range names { // in rule ID order, which is the agent's
			if !slices.ContainsFunc(st.IPBlocks, func(b v1alpha1.NodeIPBlockStatus) bool { return b.Name == n }) {
				return false
			}
		}
		return true
	}

	// 1. A and B enforced, traffic from X, Y and Z.
	first := startKubeAgent(t, l, bin, kubeconfig, token)
	waitFor(t, 30*time.Second, "block-a and block-b applied", func() bool { return applied("block-a", "block-b") })
	_, _, prog := xdpState(t, l.node, "lan0")
	tr := startTrafficFrom(t, l, srcX, srcY, srcZ)
	time.Sleep(300 * time.Millisecond)

	// 2. kill -9; B deleted while no agent can see it; then the API
	// server goes down and the agent starts again.
	first.stop(syscall.SIGKILL)
	if err := c.Delete(ctx, blockB); err != nil {
		t.Fatal(err)
	}
	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	second := startKubeAgent(t, l, bin, kubeconfig, token)
	time.Sleep(3 * time.Second) // the agent cannot reach the API server
	select {
	case <-second.exited:
		t.Fatalf("the agent exited while the API server was down: %v", second.err)
	default:
	}
	if attached, _, p := xdpState(t, l.node, "lan0"); !attached || p != prog {
		t.Fatalf("while the API server was down: attached %v, program %d; want the pinned program %d still attached", attached, p, prog)
	}
	onePinnedLink(t, l)
	// It serves its probes meanwhile: alive (no liveness restart), not ready.
	second.waitAPI(10 * time.Second)
	if h, r := second.status("/healthz"), second.status("/readyz"); h != http.StatusOK || r != http.StatusServiceUnavailable {
		t.Errorf("while the API server was down: /healthz %d, /readyz %d; want 200 and 503", h, r)
	}
	if nx, ny := tr.rx[X].N(), tr.rx[Y].N(); nx != 0 || ny != 0 {
		t.Fatalf("while the API server was down, %d frames of X (block-a) and %d of Y (block-b, still pinned) reached the node; want 0", nx, ny)
	}
	outage := [3]int64{tr.sent[X].Load(), tr.sent[Y].Load(), tr.sent[Z].Load()}

	// 3. The API server is back: the first sync removes B's entry only.
	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the first sync: block-a alone applied", func() bool { return applied("block-a") })
	sentYAtSync := tr.sent[Y].Load()
	if ny := tr.rx[Y].N(); ny > int(sentYAtSync) {
		t.Fatalf("%d frames of Y received, more than the %d sent", ny, sentYAtSync)
	}
	time.Sleep(500 * time.Millisecond)
	tr.halt()
	sent := [3]int{int(tr.sent[X].Load()), int(tr.sent[Y].Load()), int(tr.sent[Z].Load())}
	if err := tr.rx[Z].Expect(sent[Z], 5*time.Second, 200*time.Millisecond); err != nil {
		t.Fatalf("the allowed source Z lost frames: %v", err)
	}
	rxX, rxY := tr.rx[X].N(), tr.rx[Y].N()
	if rxX != 0 {
		t.Fatalf("%d of %d frames of X (block-a, wanted throughout) reached the node", rxX, sent[X])
	}
	// Every frame of Y sent once the status said block-a alone passed.
	if after := sent[Y] - int(sentYAtSync); rxY < after || rxY > sent[Y] {
		t.Fatalf("%d frames of Y reached the node; want at least the %d sent after the first sync, at most the %d sent", rxY, after, sent[Y])
	}
	if _, _, p := xdpState(t, l.node, "lan0"); p == prog {
		t.Fatalf("program %d not replaced by the restarted agent", p)
	}
	onePinnedLink(t, l)

	// The counters carried on exactly across the kill and the outage.
	second.waitAPI(10 * time.Second)
	droppedY := sent[Y] - rxY
	ts := second.talkers()
	if ts[srcX].Packets != uint64(sent[X]) || ts[srcY].Packets != uint64(sent[Y]) || ts[srcZ].Packets != uint64(sent[Z]) {
		t.Fatalf("talkers X %d Y %d Z %d; want %d %d %d", ts[srcX].Packets, ts[srcY].Packets, ts[srcZ].Packets, sent[X], sent[Y], sent[Z])
	}
	var blocks agent.BlocksResponse
	second.get("/api/v1/blocks", &blocks)
	if len(blocks.Rules) != 1 || blocks.Rules[0].Name != "block-a" || blocks.Rules[0].DroppedPackets != uint64(sent[X]) || blocks.Rules[0].MatchedPackets != uint64(sent[X]) {
		t.Fatalf("blocks %+v; want block-a alone with %d matched and dropped", blocks.Rules, sent[X])
	}
	st := second.stats()
	if total := sent[X] + sent[Y] + sent[Z]; st.Packets != uint64(total) || st.Dropped != uint64(sent[X]+droppedY) || st.Passed != uint64(sent[Z]+rxY) {
		t.Fatalf("stats packets %d dropped %d passed %d; want %d, %d, %d", st.Packets, st.Dropped, st.Passed, total, sent[X]+droppedY, sent[Z]+rxY)
	}
	waitFor(t, 10*time.Second, "the status to report the same counts", func() bool {
		st := get().Status
		return len(st.Interfaces) == 1 && st.Interfaces[0].Totals.Packets == int64(sent[X]+sent[Y]+sent[Z]) &&
			st.Interfaces[0].Totals.Dropped == int64(sent[X]+droppedY) && len(st.IPBlocks) == 1 && st.IPBlocks[0].DroppedPackets == int64(sent[X])
	})
	t.Logf("sent X %d, Y %d, Z %d (%d, %d, %d when checked 3 s into the outage); received X %d, Y %d (%d dropped, %d sent after the first sync), Z %d",
		sent[X], sent[Y], sent[Z], outage[X], outage[Y], outage[Z], rxX, rxY, droppedY, sent[Y]-int(sentYAtSync), tr.rx[Z].N())
	if code := second.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

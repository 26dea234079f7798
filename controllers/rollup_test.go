package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lanmonitor/lanmonitor/agent/kernel/fake"
	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/bpf"
)

func nodeNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%02d", i)
	}
	return out
}

func getMonitor(t testing.TB, name string) *lanmonitorv1alpha1.LanMonitor {
	t.Helper()
	var m lanmonitorv1alpha1.LanMonitor
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// TestRollup: 20 real agents (on fake kernels, reports timed by one fake
// clock, so rates are exact) see overlapping talkers, totals and rule
// counters; the LanMonitor and IPBlock status carry the exact merge.
func TestRollup(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	names := nodeNames(20)
	for _, n := range names {
		createNodes(t, node{name: n})
	}
	startController(t, false)
	m := monitor("lan", time.Second)
	m.Spec.TopN = 5
	m.Spec.InternalCIDRs = []string{"198.18.0.0/15"}
	create(t, m, ipBlock("scanners", "198.19.0.0/16"))
	clk := clocktesting.NewFakeClock(time.Now())
	agents := startAgents(t, agentOptions{clock: clk}, names...)
	waitEnforced(t, "scanners", 20)
	// Every Manager's report ticker waits on the clock.
	eventually(t, 10*time.Second, func() error {
		if w := clk.Waiters(); w != len(names) {
			return fmt.Errorf("%d report tickers", w)
		}
		return nil
	})
	// step moves the clock one report interval on and waits until every
	// agent's report of that instant has read its datapath.
	step := func() {
		t.Helper()
		before := map[string]int{}
		for n, a := range agents {
			before[n] = a.datapath(t).RuleCounterReads()
		}
		clk.Step(time.Second)
		eventually(t, 10*time.Second, func() error {
			for n, a := range agents {
				if a.datapath(t).RuleCounterReads() == before[n] {
					return fmt.Errorf("%s has not reported", n)
				}
			}
			return nil
		})
	}

	src := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	dst := src("198.18.255.1") // the node
	// Before the measured interval, 198.18.2.1 sends 3 bytes to node-03 and
	// 4 to node-04: in the next one it has the same rate on both, and
	// node-04 saw more bytes.
	agents["node-03"].receive(t, fake.Frame{Src: src("198.18.2.1"), Dst: dst, Packets: 1, Bytes: 3})
	agents["node-04"].receive(t, fake.Frame{Src: src("198.18.2.1"), Dst: dst, Packets: 1, Bytes: 4})
	agents["node-05"].Kernel.DeleteInterface("lan0")
	step()

	// The measured interval (1 s). Node i sees the ten addresses
	// 198.18.1.1-10; address k sends it k*125,000 + (7i+3k) mod 20 bytes
	// (k Mbit/s plus 8 bit/s per extra byte) in k*100 frames, so a
	// different node sees each address most. 2001:db8::13 (50 Mbit/s) is
	// seen by node-13 only, and is the top talker; 198.18.2.1 sends 20
	// Mbit/s to node-03 and node-04. 198.19.0.1 (blocked) sends 5(i+1)
	// frames to the node (dropped) and 5(i+1) to another host (snooped:
	// matched, not dropped), 64 bytes each. Node-05 has lost its
	// interface and sees nothing.
	var wantTotals lanmonitorv1alpha1.TrafficTotals
	var wantBits, wantPackets int64
	reports := map[string][]lanmonitorv1alpha1.Talker{}
	for i, n := range names {
		if n == "node-05" {
			continue
		}
		var frames []fake.Frame
		var talkers []lanmonitorv1alpha1.Talker
		for k := 1; k <= 10; k++ {
			bytes := uint64(k*125_000 + (7*i+3*k)%20)
			frames = append(frames, fake.Frame{Src: src(fmt.Sprintf("198.18.1.%d", k)), Dst: dst, Packets: uint64(k * 100), Bytes: bytes})
			talkers = append(talkers, lanmonitorv1alpha1.Talker{Address: fmt.Sprintf("198.18.1.%d", k), Internal: true,
				BitsPerSecond: int64(8 * bytes), PacketsPerSecond: int64(k * 100), Bytes: int64(bytes), Packets: int64(k * 100)})
		}
		switch i {
		case 13:
			frames = append(frames, fake.Frame{Src: src("2001:db8::13"), Dst: src("2001:db8::1"), Packets: 1, Bytes: 6_250_000})
			talkers = append(talkers, lanmonitorv1alpha1.Talker{Address: "2001:db8::13", BitsPerSecond: 50_000_000, PacketsPerSecond: 1, Bytes: 6_250_000, Packets: 1})
		case 3, 4:
			frames = append(frames, fake.Frame{Src: src("198.18.2.1"), Dst: dst, Packets: 1, Bytes: 2_500_000})
			talkers = append(talkers, lanmonitorv1alpha1.Talker{Address: "198.18.2.1", Internal: true, BitsPerSecond: 20_000_000, PacketsPerSecond: 1,
				Bytes: int64(2_500_000 + i), Packets: 2})
		}
		blocked := uint64(5 * (i + 1))
		frames = append(frames,
			fake.Frame{Src: src("198.19.0.1"), Dst: dst, Packets: blocked, Bytes: 64 * blocked},
			fake.Frame{Src: src("198.19.0.1"), Dst: src("198.18.255.2"), Packets: blocked, Bytes: 64 * blocked, Snooped: true})
		agents[n].receive(t, frames...)
		agents[n].datapath(t).AddStats(bpf.Stats{Malformed: 1, NonIP: 2})
		for _, f := range frames {
			wantTotals.Packets += int64(f.Packets)
			wantTotals.Bytes += int64(f.Bytes)
			wantBits += int64(8 * f.Bytes)
			wantPackets += int64(f.Packets)
			if f.Snooped {
				wantTotals.Snooped += int64(f.Packets)
			} else {
				wantTotals.Local += int64(f.Packets)
			}
		}
		wantTotals.Dropped += int64(blocked)
		wantTotals.Malformed++
		wantTotals.NonIP += 2
		if n == "node-03" || n == "node-04" {
			// The bytes and frames of the interval before.
			wantTotals.Packets++
			wantTotals.Local++
			wantTotals.Bytes += int64(i)
		}
		reports[n] = talkers
	}
	step()

	// Expected top 5, worked out by hand from the scheme above: node i
	// maximises (7i+3k) mod 20 = 19 for address k at i = 3(19-3k) mod 20;
	// for k = 8 that is node-05, which saw nothing, and the next best is
	// node-02 (7*2+24 = 38 = 18 mod 20).
	talker := func(addr string, k, node, extra int) lanmonitorv1alpha1.Talker {
		return lanmonitorv1alpha1.Talker{
			Address: addr, Internal: true, BitsPerSecond: int64(k*1_000_000 + 8*extra), PacketsPerSecond: int64(k * 100),
			Bytes: int64(k*125_000 + extra), Packets: int64(k * 100), Node: fmt.Sprintf("node-%02d", node),
		}
	}
	wantTop := []lanmonitorv1alpha1.Talker{
		{Address: "2001:db8::13", BitsPerSecond: 50_000_000, PacketsPerSecond: 1, Bytes: 6_250_000, Packets: 1, Node: "node-13"},
		{Address: "198.18.2.1", Internal: true, BitsPerSecond: 20_000_000, PacketsPerSecond: 1, Bytes: 2_500_004, Packets: 2, Node: "node-04"},
		talker("198.18.1.10", 10, 7, 19), // 3(19-30) = -33 = 7 (mod 20)
		talker("198.18.1.9", 9, 16, 19),  // 3(19-27) = -24 = 16
		talker("198.18.1.8", 8, 2, 18),   // 3(19-24) = -15 = 5, which saw nothing
	}
	eventually(t, 20*time.Second, func() error {
		st := getMonitor(t, "lan").Status
		if !equality.Semantic.DeepEqual(st.TopTalkers, wantTop) {
			return fmt.Errorf("top talkers:\n got %+v\nwant %+v", st.TopTalkers, wantTop)
		}
		if st.Totals != wantTotals {
			return fmt.Errorf("totals %+v, want %+v", st.Totals, wantTotals)
		}
		if st.BitsPerSecond != wantBits || st.PacketsPerSecond != wantPackets {
			return fmt.Errorf("rates %d bit/s %d packet/s, want %d, %d", st.BitsPerSecond, st.PacketsPerSecond, wantBits, wantPackets)
		}
		if st.Nodes.Desired != 20 || st.Nodes.Ready != 19 {
			return fmt.Errorf("nodes %+v", st.Nodes)
		}
		// RATE: the top talker's, 2001:db8::13 at 50 Mbit/s.
		want := lanmonitorv1alpha1.MonitorDisplay{Nodes: "19/20", Interface: "lan0", Rate: "50.0 Mbit/s"}
		if st.Display != want {
			return fmt.Errorf("display %+v, want %+v", st.Display, want)
		}
		ready := findCondition(st.Conditions, lanmonitorv1alpha1.ConditionReady)
		degraded := findCondition(st.Conditions, lanmonitorv1alpha1.ConditionDegraded)
		if ready.Reason != "NodesNotReady" || ready.Message != "attached on 19 of 20 nodes" ||
			degraded.Reason != "NotAttached" || degraded.Message != "not attached on node-05 (see their LanMonitorNode status)" {
			return fmt.Errorf("conditions %+v", st.Conditions)
		}
		return nil
	})
	// The same merge, recomputed by brute force from the raw reports.
	if got := bruteForceTop(reports, 5); !equality.Semantic.DeepEqual(got, wantTop) {
		t.Errorf("brute force disagrees with the hand-worked list:\n got %+v\nwant %+v", got, wantTop)
	}

	eventually(t, 20*time.Second, func() error {
		st := getBlock(t, "scanners").Status
		// Node-05, not attached, enforces nothing: 19 of 20 nodes;
		// 10(i+1) frames matched and 5(i+1) dropped on each other node.
		if st.MatchedPackets != 2040 || st.DroppedPackets != 1020 || st.Nodes.Desired != 20 || st.Nodes.Enforced != 19 ||
			st.Display.Nodes != "19/20" || st.Display.CIDRs != "198.19.0.0/16" {
			return fmt.Errorf("IPBlock status %+v", st)
		}
		return nil
	})
}

// bruteForceTop merges node reports the slow way: for every address, scan
// every node for its highest entry; then sort.
func bruteForceTop(reports map[string][]lanmonitorv1alpha1.Talker, n int) []lanmonitorv1alpha1.Talker {
	addrs := map[string]bool{}
	for _, ts := range reports {
		for _, t := range ts {
			addrs[t.Address] = true
		}
	}
	higher := func(a, b lanmonitorv1alpha1.Talker) bool {
		if a.BitsPerSecond != b.BitsPerSecond {
			return a.BitsPerSecond > b.BitsPerSecond
		}
		if a.Bytes != b.Bytes {
			return a.Bytes > b.Bytes
		}
		if a.Packets != b.Packets {
			return a.Packets > b.Packets
		}
		if a.Address != b.Address {
			return a.Address < b.Address
		}
		return a.Node < b.Node
	}
	var out []lanmonitorv1alpha1.Talker
	for addr := range addrs {
		var best *lanmonitorv1alpha1.Talker
		for node, ts := range reports {
			for _, t := range ts {
				if t.Address == addr {
					t.Node = node
					if best == nil || higher(t, *best) {
						best = &t
					}
				}
			}
		}
		out = append(out, *best)
	}
	slices.SortFunc(out, func(a, b lanmonitorv1alpha1.Talker) int {
		if higher(a, b) {
			return -1
		}
		return 1
	})
	return out[:n]
}

// TestRollupBounded: with 1,000 real agents each tracking 100 distinct
// talkers and each exempting its own address from the block, the LanMonitor
// and IPBlock objects stay small.
func TestRollupBounded(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	const nodes = 1000
	start := time.Now()
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("node-%04d", i)
	}
	parallel(t, nodes, 16, func(i int) error {
		createNodes(t, node{name: names[i]})
		return nil
	})
	startController(t, false)
	m := monitor("lan", time.Second)
	m.Spec.TopN = 100
	create(t, m, ipBlock("scanners", "198.18.0.0/15"))
	index := map[string]int{}
	for i, n := range names {
		index[n] = i
	}
	agents := startAgents(t, agentOptions{setup: func(n string, k *fake.Kernel) {
		i := index[n]
		k.SetAddresses([]netip.Addr{netip.AddrFrom4([4]byte{198, 18, byte(i / 256), byte(i % 256)})}, nil)
	}}, names...)
	parallel(t, nodes, 16, func(i int) error {
		agents[names[i]].receive(t, talkers(i, 100)...)
		return nil
	})
	t.Logf("%d agents running after %v", nodes, time.Since(start))
	var sizes struct{ monitor, block int }
	eventually(t, 3*time.Minute, func() error {
		m := getMonitor(t, "lan")
		b := getBlock(t, "scanners")
		if m.Status.Nodes.Ready != nodes || b.Status.Nodes.Enforced != nodes || len(m.Status.TopTalkers) != 100 {
			return fmt.Errorf("monitor nodes %+v with %d talkers, block nodes %+v", m.Status.Nodes, len(m.Status.TopTalkers), b.Status.Nodes)
		}
		if got := len(b.Status.ExemptedAddresses); got != lanmonitorv1alpha1.MaxExemptedAddresses {
			return fmt.Errorf("%d exempted addresses, want the first %d", got, lanmonitorv1alpha1.MaxExemptedAddresses)
		}
		mj, err := json.Marshal(m)
		if err != nil {
			return err
		}
		bj, err := json.Marshal(b)
		if err != nil {
			return err
		}
		sizes.monitor, sizes.block = len(mj), len(bj)
		return nil
	})
	t.Logf("%d nodes: LanMonitor %d bytes, IPBlock %d bytes, after %v", nodes, sizes.monitor, sizes.block, time.Since(start))
	// 100 talkers of about 170 bytes each, plus conditions and counters.
	if sizes.monitor > 24<<10 {
		t.Errorf("LanMonitor is %d bytes, want at most 24 KiB", sizes.monitor)
	}
	// 100 exempted addresses, conditions and counters.
	if sizes.block > 6<<10 {
		t.Errorf("IPBlock is %d bytes, want at most 6 KiB", sizes.block)
	}
}

// parallel runs f(0..n-1) on workers goroutines and fails the test on the
// first error.
func parallel(t testing.TB, n, workers int, f func(i int) error) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
}

// TestConcurrency: 20 agents report every second while an IPBlock changes
// twice within 5 seconds. Every node converges on the final generation, no
// node's counters are lost, the block is never reported enforced for a
// generation before every node applied it, and the controller's writes stay
// within the rate limits (no hot loop).
func TestConcurrency(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	ctx := context.Background()
	names := nodeNames(20)
	for _, n := range names {
		createNodes(t, node{name: n})
	}
	ctl := startController(t, false)
	create(t, monitor("lan", time.Second))
	agents := startAgents(t, agentOptions{setup: func(_ string, k *fake.Kernel) {
		// Applying takes 0-400ms, so that nodes finish in any order.
		k.SetSyncDelay(func() time.Duration { return time.Duration(rand.Int64N(int64(400 * time.Millisecond))) })
	}}, names...)
	eventually(t, 10*time.Second, func() error {
		if r := getMonitor(t, "lan").Status.Nodes.Ready; r != 20 {
			return fmt.Errorf("%d nodes ready", r)
		}
		return nil
	})

	// Traffic: every 100ms, node i gets i+1 frames from 198.18.0.9 (inside
	// every generation of the block: dropped once the node applied it) and
	// 9(i+1) from 198.18.9.9 (never blocked), 64 bytes each.
	var (
		mu      sync.Mutex
		packets = map[string]int64{}
	)
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	var traffic sync.WaitGroup
	traffic.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-trafficCtx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			for i, n := range names {
				d := agents[n].Kernel.Datapath("lan0")
				blocked, other := uint64(i+1), uint64(9*(i+1))
				d.Receive(fake.Frame{Src: netip.MustParseAddr("198.18.0.9"), Dst: netip.MustParseAddr("198.18.255.1"), Packets: blocked, Bytes: 64 * blocked})
				d.Receive(fake.Frame{Src: netip.MustParseAddr("198.18.9.9"), Dst: netip.MustParseAddr("198.18.255.1"), Packets: other, Bytes: 64 * other})
				packets[n] += int64(blocked + other)
			}
			mu.Unlock()
		}
	})
	defer func() { stopTraffic(); traffic.Wait() }()

	// Check every version of the block that a watch sees: Enforced=True
	// for a generation means every node's maps hold that generation's
	// prefixes (each generation adds one to the one before).
	generations := map[int64][]netip.Prefix{
		1: {netip.MustParsePrefix("198.18.0.0/24")},
		2: {netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("198.18.1.0/24")},
		3: {netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("198.18.1.0/24"), netip.MustParsePrefix("198.18.2.0/24")},
	}
	var (
		checked    int
		violations []string
	)
	stopObserving := observe(t, &lanmonitorv1alpha1.IPBlock{}, func(o client.Object) {
		b := o.(*lanmonitorv1alpha1.IPBlock)
		checked++
		c := findCondition(b.Status.Conditions, lanmonitorv1alpha1.ConditionEnforced)
		if c == nil || c.Status != metav1.ConditionTrue {
			return
		}
		for _, n := range names {
			tables := agents[n].Kernel.Datapath("lan0").Tables()
			for _, p := range generations[c.ObservedGeneration] {
				if _, ok := tables[bpf.TableSource][p]; !ok {
					violations = append(violations, fmt.Sprintf("rv %s: Enforced=True for generation %d while %s's maps lack %s",
						b.ResourceVersion, c.ObservedGeneration, n, p))
				}
			}
		}
		if c.ObservedGeneration == b.Generation && b.Status.Nodes.Enforced != 20 {
			violations = append(violations, fmt.Sprintf("rv %s: Enforced=True with nodes %+v", b.ResourceVersion, b.Status.Nodes))
		}
	})

	agentWritesBefore, agentFailedBefore := statusWrites(t)
	before := ctl.writes.snapshot()
	start := time.Now()
	b := ipBlock("scan", "198.18.0.0/24")
	create(t, b)
	update := func(cidrs ...string) {
		t.Helper()
		updateBlock(t, "scan", func(s *lanmonitorv1alpha1.IPBlockSpec) { s.CIDRs = cidrs })
	}
	time.Sleep(1500 * time.Millisecond)
	update("198.18.0.0/24", "198.18.1.0/24")
	time.Sleep(1500 * time.Millisecond)
	update("198.18.0.0/24", "198.18.1.0/24", "198.18.2.0/24")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the two changes took %v, want under 5s", d)
	}

	final := waitEnforced(t, "scan", 20)
	if final.Generation != 3 {
		t.Fatalf("final generation %d, want 3", final.Generation)
	}
	converged := time.Since(start)
	for _, n := range names {
		var l lanmonitorv1alpha1.LanMonitorNode
		if err := env.Client.Get(ctx, client.ObjectKey{Name: n}, &l); err != nil {
			t.Fatal(err)
		}
		if len(l.Status.IPBlocks) != 1 || l.Status.IPBlocks[0].Generation != 3 {
			t.Errorf("%s reports %+v, want generation 3", n, l.Status.IPBlocks)
		}
	}

	// Stop the traffic: the rollups must reach the exact final sums of
	// what the nodes' datapaths counted.
	stopTraffic()
	traffic.Wait()
	var wantMatched, wantPackets int64
	for _, n := range names {
		var ruleID uint32 // the node's own
		for _, r := range getNode(t, n).Status.IPBlocks {
			if r.Name == "scan" {
				ruleID = uint32(r.RuleID)
			}
		}
		c, _ := agents[n].Kernel.Datapath("lan0").RuleCounters()
		if c[ruleID].Matched == 0 || c[ruleID].Dropped != c[ruleID].Matched {
			t.Errorf("%s counted %+v for rule %d: want drops, all of the matched", n, c[ruleID], ruleID)
		}
		wantMatched += int64(c[ruleID].Matched)
		wantPackets += packets[n]
	}
	eventually(t, 10*time.Second, func() error {
		st := getBlock(t, "scan").Status
		mst := getMonitor(t, "lan").Status
		if st.MatchedPackets != wantMatched || st.DroppedPackets != wantMatched || mst.Totals.Packets != wantPackets {
			return fmt.Errorf("matched %d dropped %d packets %d, want %d, %d, %d",
				st.MatchedPackets, st.DroppedPackets, mst.Totals.Packets, wantMatched, wantMatched, wantPackets)
		}
		return nil
	})
	elapsed := time.Since(start)
	stopObserving()
	for _, v := range violations {
		t.Error(v)
	}
	if checked < 3 {
		t.Errorf("observed only %d versions of the block", checked)
	}

	// Writes: no LanMonitorNode spec changes (the agents watch the
	// IPBlock); the rollups are written at once only when a condition or the generation
	// changes (3 times per generation: new generation, first node, all
	// nodes), otherwise at most once per second.
	after := ctl.writes.snapshot()
	delta := func(k string) int { return after[k] - before[k] }
	seconds := int(elapsed/time.Second) + 1
	specWrites := delta("patch *v1alpha1.LanMonitorNode")
	blockWrites := delta("patch *v1alpha1.IPBlock/status")
	monitorWrites := delta("patch *v1alpha1.LanMonitor/status")
	failed := 0
	for k := range after {
		if strings.HasPrefix(k, "failed ") {
			failed += delta(k)
		}
	}
	t.Logf("converged in %v; over %v: %d LanMonitorNode spec writes, %d IPBlock and %d LanMonitor status writes, %d failed writes, %d versions checked",
		converged, elapsed, specWrites, blockWrites, monitorWrites, failed, checked)
	// A status write fails (conflict) only when the block changed under it:
	// at most once per spec update.
	if failed > 2 {
		t.Errorf("%d failed writes, want at most 2 (%v)", failed, after)
	}
	if specWrites != 0 {
		t.Errorf("%d LanMonitorNode spec writes, want none", specWrites)
	}
	if max := 3*3 + seconds; blockWrites > max {
		t.Errorf("%d IPBlock status writes in %ds, want at most %d", blockWrites, seconds, max)
	}
	if max := 2 + seconds; monitorWrites > max {
		t.Errorf("%d LanMonitor status writes in %ds, want at most %d", monitorWrites, seconds, max)
	}
	// The agents: one write per applied generation plus one per interval,
	// none failed.
	agentWrites, agentFailed := statusWrites(t)
	if w, max := agentWrites-agentWritesBefore, 20*(3+2+int(time.Since(start)/time.Second)+5); w > max {
		t.Errorf("the agents wrote %d times, want at most %d", w, max)
	}
	if f := agentFailed - agentFailedBefore; f != 0 {
		t.Errorf("%d failed agent status writes", f)
	}
	for _, n := range names {
		if e := agents[n].Errors(); e != 0 {
			t.Errorf("agent %s logged %d errors", n, e)
		}
	}
}

// TestStatusSettle: IPBlocks created together cost each node one status
// write, which reports all of them: an agent waits its --status-settle (and
// up to as much again) after a change before it writes. The test gives the
// agents 1.5 s (the default is agent.DefaultStatusSettle) so that a loaded
// API server still takes the three creates within one settle time.
func TestStatusSettle(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	const settle = 1500 * time.Millisecond
	names := nodeNames(3)
	for _, n := range names {
		createNodes(t, node{name: n})
	}
	startController(t, false)
	create(t, monitor("lan", time.Hour)) // no periodic report during the test
	startAgents(t, agentOptions{statusSettle: settle}, names...)
	eventually(t, 10*time.Second, func() error {
		if r := getMonitor(t, "lan").Status.Nodes.Ready; r != 3 {
			return fmt.Errorf("%d nodes ready", r)
		}
		return nil
	})
	time.Sleep(2 * settle) // the last write of the start

	before, _ := statusWrites(t)
	start := time.Now()
	blocks := []string{"a", "b", "c"}
	for i, name := range blocks {
		create(t, ipBlock(name, fmt.Sprintf("198.18.%d.0/24", i)))
	}
	if d := time.Since(start); d >= settle {
		t.Fatalf("creating 3 IPBlocks took %v, not within one settle time (%v): the API server is too slow for this test", d, settle)
	}
	for _, name := range blocks {
		waitEnforced(t, name, 3)
	}
	for _, n := range names {
		if got := len(getNode(t, n).Status.IPBlocks); got != 3 {
			t.Errorf("%s reports %d IPBlocks, want 3", n, got)
		}
	}
	time.Sleep(2 * settle) // any late write
	after, _ := statusWrites(t)
	if got := after - before; got != len(names) {
		t.Errorf("%d status writes for 3 IPBlocks created together on %d nodes, want %d (one per node)", got, len(names), len(names))
	}
}

package controllers_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lanmonitor/lanmonitor/agent"
	"github.com/lanmonitor/lanmonitor/agent/kernel/fake"
	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/bpf"
)

func monitor(name string, interval time.Duration) *lanmonitorv1alpha1.LanMonitor {
	return &lanmonitorv1alpha1.LanMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       lanmonitorv1alpha1.LanMonitorSpec{ReportInterval: &metav1.Duration{Duration: interval}},
	}
}

func ipBlock(name string, cidrs ...string) *lanmonitorv1alpha1.IPBlock {
	return &lanmonitorv1alpha1.IPBlock{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       lanmonitorv1alpha1.IPBlockSpec{CIDRs: cidrs},
	}
}

func getBlock(t testing.TB, name string) *lanmonitorv1alpha1.IPBlock {
	t.Helper()
	var b lanmonitorv1alpha1.IPBlock
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

// updateBlock changes a block's spec, retrying when a status write of the
// controller got in between (as kubectl edit would have to).
func updateBlock(t testing.TB, name string, mutate func(*lanmonitorv1alpha1.IPBlockSpec)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		b := getBlock(t, name)
		mutate(&b.Spec)
		return env.Client.Update(context.Background(), b)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitEnforced waits until the block's status says Enforced=True for its
// current generation on want nodes.
func waitEnforced(t testing.TB, name string, want int32) *lanmonitorv1alpha1.IPBlock {
	t.Helper()
	var b lanmonitorv1alpha1.IPBlock
	eventually(t, 20*time.Second, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &b); err != nil {
			return err
		}
		c := findCondition(b.Status.Conditions, lanmonitorv1alpha1.ConditionEnforced)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != b.Generation || b.Status.Nodes.Enforced != want {
			return fmt.Errorf("%s: Enforced %+v, nodes %+v", name, c, b.Status.Nodes)
		}
		return nil
	})
	return &b
}

// TestIPBlocksWithoutNodeWrites: the agents watch the IPBlocks and their
// Node themselves. Creating, editing and deleting IPBlocks reaches every
// selected node's maps with no LanMonitorNode write; a node's labels
// decide which blocks apply (and a label change reaches the agent through
// its Node watch); each node keeps its own rule IDs, taking them back from
// its status when its agent restarts.
func TestIPBlocksWithoutNodeWrites(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	ctx := context.Background()
	createNodes(t, node{name: "node-1", labels: map[string]string{"zone": "a"}}, node{name: "node-2"})
	ctl := startController(t, false)
	create(t, monitor("lan", time.Second))
	agents := startAgents(t, agentOptions{}, "node-1", "node-2")
	eventually(t, 20*time.Second, func() error {
		if r := getMonitor(t, "lan").Status.Nodes.Ready; r != 2 {
			return fmt.Errorf("%d nodes ready", r)
		}
		return nil
	})
	specWrites := func() int { return ctl.writes.snapshot()["patch *v1alpha1.LanMonitorNode"] }
	before := specWrites()
	generations := map[string]int64{}
	for _, n := range []string{"node-1", "node-2"} {
		generations[n] = getNode(t, n).Generation
	}
	// source is the source table of a node's maps, as "prefix=ruleID".
	source := func(a *testAgent) []string {
		var out []string
		for p, r := range a.datapath(t).Tables()[bpf.TableSource] {
			out = append(out, fmt.Sprintf("%s=%d", p, r.ID))
		}
		slices.Sort(out)
		return out
	}
	// want is what a node's maps must hold: its status' rule IDs for the
	// blocks' CIDRs.
	want := func(node string, blocks map[string][]string) []string {
		ids := map[string]int32{}
		for _, r := range getNode(t, node).Status.IPBlocks {
			ids[r.Name] = r.RuleID
		}
		var out []string
		for name, cidrs := range blocks {
			for _, c := range cidrs {
				out = append(out, fmt.Sprintf("%s=%d", c, ids[name]))
			}
		}
		slices.Sort(out)
		return out
	}
	expect := func(step string, blocks map[string]map[string][]string) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			for node, bs := range blocks {
				if got, w := source(agents[node]), want(node, bs); !slices.Equal(got, w) {
					return fmt.Errorf("%s: %s maps %v, want %v", step, node, got, w)
				}
			}
			return nil
		})
	}

	all := ipBlock("all", "198.18.1.0/24")
	zoneA := ipBlock("zone-a", "198.18.2.0/24")
	zoneA.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"zone": "a"}}
	create(t, all, zoneA)
	waitEnforced(t, "all", 2)
	waitEnforced(t, "zone-a", 1)
	expect("created", map[string]map[string][]string{
		"node-1": {"all": {"198.18.1.0/24"}, "zone-a": {"198.18.2.0/24"}},
		"node-2": {"all": {"198.18.1.0/24"}},
	})

	updateBlock(t, "all", func(s *lanmonitorv1alpha1.IPBlockSpec) { s.CIDRs = []string{"198.18.1.0/24", "198.18.3.0/24"} })
	if b := waitEnforced(t, "all", 2); b.Generation != 2 {
		t.Fatalf("all at generation %d, want 2", b.Generation)
	}
	expect("edited", map[string]map[string][]string{
		"node-1": {"all": {"198.18.1.0/24", "198.18.3.0/24"}, "zone-a": {"198.18.2.0/24"}},
		"node-2": {"all": {"198.18.1.0/24", "198.18.3.0/24"}},
	})

	// node-2 joins zone a.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var n corev1.Node
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "node-2"}, &n); err != nil {
			return err
		}
		n.Labels = map[string]string{"zone": "a"}
		return env.Client.Update(ctx, &n)
	}); err != nil {
		t.Fatal(err)
	}
	waitEnforced(t, "zone-a", 2)
	expect("labelled", map[string]map[string][]string{
		"node-2": {"all": {"198.18.1.0/24", "198.18.3.0/24"}, "zone-a": {"198.18.2.0/24"}},
	})

	// node-2's agent restarts and takes its rule IDs back from its
	// status: here IDs its agent did not choose (as a 0.2 controller's
	// would be), written while no agent runs.
	if err := agents["node-2"].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l := getNode(t, "node-2")
		for i := range l.Status.IPBlocks {
			l.Status.IPBlocks[i].RuleID = map[string]int32{"all": 7, "zone-a": 9}[l.Status.IPBlocks[i].Name]
		}
		return env.Client.Status().Update(ctx, l)
	}); err != nil {
		t.Fatal(err)
	}
	agents["node-2"] = startAgents(t, agentOptions{}, "node-2")["node-2"]
	eventually(t, 10*time.Second, func() error {
		if got, w := source(agents["node-2"]), []string{"198.18.1.0/24=7", "198.18.2.0/24=9", "198.18.3.0/24=7"}; !slices.Equal(got, w) {
			return fmt.Errorf("restarted node-2's maps %v, want %v", got, w)
		}
		return nil
	})

	if err := env.Client.Delete(ctx, getBlock(t, "zone-a")); err != nil {
		t.Fatal(err)
	}
	expect("deleted", map[string]map[string][]string{
		"node-1": {"all": {"198.18.1.0/24", "198.18.3.0/24"}},
		"node-2": {"all": {"198.18.1.0/24", "198.18.3.0/24"}},
	})

	if w := specWrites() - before; w != 0 {
		t.Errorf("%d LanMonitorNode writes for IPBlock changes, want 0", w)
	}
	for n, g := range generations {
		if got := getNode(t, n).Generation; got != g {
			t.Errorf("%s: LanMonitorNode generation %d, was %d: its spec changed", n, got, g)
		}
	}
}

// getNode returns the LanMonitorNode of node.
func getNode(t testing.TB, node string) *lanmonitorv1alpha1.LanMonitorNode {
	t.Helper()
	var l lanmonitorv1alpha1.LanMonitorNode
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: node}, &l); err != nil {
		t.Fatal(err)
	}
	return &l
}

// TestExpiry: a block is lifted from every node's datapath, and marked
// Expired, within a second after expiresAt (and not before); the nodes'
// status reports it lifted within the status settle time after that.
func TestExpiry(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	ctx := context.Background()
	createNodes(t, node{name: "node-1"}, node{name: "node-2"})
	startController(t, false)
	create(t, monitor("lan", time.Second))
	agents := startAgents(t, agentOptions{}, "node-1", "node-2")
	b := ipBlock("temporary", "198.18.0.0/24")
	create(t, b)
	waitEnforced(t, "temporary", 2)
	// On each node: 4 frames for the node from a blocked source (dropped)
	// and 6 between other hosts (matched, passed: snooped).
	for _, a := range agents {
		a.receive(t, fake.Frame{Src: netip.MustParseAddr("198.18.0.5"), Dst: netip.MustParseAddr("198.18.255.1"), Packets: 4, Bytes: 400},
			fake.Frame{Src: netip.MustParseAddr("198.18.0.6"), Dst: netip.MustParseAddr("198.18.255.2"), Packets: 6, Bytes: 600, Snooped: true})
	}
	eventually(t, 10*time.Second, func() error {
		b := getBlock(t, "temporary")
		if b.Status.MatchedPackets != 20 || b.Status.DroppedPackets != 8 {
			return fmt.Errorf("counters %d/%d, want 20/8", b.Status.MatchedPackets, b.Status.DroppedPackets)
		}
		return nil
	})
	// metav1.Time has a resolution of one second. 3-4 s from now: the new
	// generation is Enforced once both nodes report it, 0.5-1 s (the status
	// settle) after they applied it.
	expiresAt := time.Now().Truncate(time.Second).Add(4 * time.Second)
	updateBlock(t, "temporary", func(s *lanmonitorv1alpha1.IPBlockSpec) { s.ExpiresAt = &metav1.Time{Time: expiresAt} })
	b = waitEnforced(t, "temporary", 2)
	if c := findCondition(b.Status.Conditions, lanmonitorv1alpha1.ConditionExpired); c.Status != metav1.ConditionFalse ||
		c.Message != "expires at "+expiresAt.UTC().Format(time.RFC3339) {
		t.Errorf("Expired before expiry: %+v", c)
	}
	if time.Now().After(expiresAt) {
		t.Fatal("too slow: the block expired before the new generation was enforced")
	}

	// Poll every 10ms. A poll whose answer arrived before expiresAt must
	// still show the block; the first poll that shows it lifted (marked,
	// reported) bounds the delay from above, by the time its answer
	// arrived. Lifted is the nodes' datapaths (the agents enforce expiresAt
	// themselves); reported is their status, written --status-settle (0.5-1
	// s) after the change.
	blockPrefix := netip.MustParsePrefix("198.18.0.0/24")
	lifted := func() bool {
		for _, a := range agents {
			for _, rules := range a.Kernel.Datapath("lan0").Tables() {
				if _, ok := rules[blockPrefix]; ok {
					return false
				}
			}
		}
		return true
	}
	reported := func() bool {
		var l lanmonitorv1alpha1.LanMonitorNodeList
		if err := env.Client.List(ctx, &l); err != nil {
			t.Fatal(err)
		}
		for _, n := range l.Items {
			if slices.ContainsFunc(n.Status.IPBlocks, func(r lanmonitorv1alpha1.NodeIPBlockStatus) bool { return r.Name == "temporary" }) {
				return false
			}
		}
		return true
	}
	marked := func() bool {
		c := findCondition(getBlock(t, "temporary").Status.Conditions, lanmonitorv1alpha1.ConditionExpired)
		return c != nil && c.Status == metav1.ConditionTrue
	}
	pending := map[string]func() bool{"lifted from the nodes": lifted, "marked Expired": marked, "reported lifted by the nodes": reported}
	within := map[string]time.Duration{"lifted from the nodes": time.Second, "marked Expired": time.Second,
		"reported lifted by the nodes": agent.DefaultStatusSettle*2 + time.Second}
	for len(pending) > 0 {
		for what, done := range pending {
			ok := done()
			at := time.Now()
			switch {
			case ok && at.Before(expiresAt):
				t.Fatalf("%s %v before expiresAt", what, expiresAt.Sub(at))
			case ok:
				d := at.Sub(expiresAt)
				t.Logf("%s at most %v after expiresAt", what, d)
				if d > within[what] {
					t.Errorf("%s %v after expiresAt, want within %v", what, d, within[what])
				}
				delete(pending, what)
			case at.After(expiresAt.Add(5 * time.Second)):
				t.Fatalf("not %s 5s after expiresAt", what)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}

	b = getBlock(t, "temporary")
	for typ, want := range map[string]string{
		lanmonitorv1alpha1.ConditionExpired:           "True/Expired",
		lanmonitorv1alpha1.ConditionEnforced:          "False/Expired",
		lanmonitorv1alpha1.ConditionPartiallyEnforced: "False/NotApplied",
	} {
		c := findCondition(b.Status.Conditions, typ)
		if got := fmt.Sprintf("%s/%s", c.Status, c.Reason); got != want {
			t.Errorf("%s = %s, want %s", typ, got, want)
		}
	}
	// The agents drop the rule from their maps and their reports; the
	// block keeps what it counted.
	eventually(t, 5*time.Second, func() error {
		for name, a := range agents {
			if n := len(a.datapath(t).Tables()[bpf.TableSource]); n != 0 {
				return fmt.Errorf("%s still enforces %d prefixes", name, n)
			}
			var l lanmonitorv1alpha1.LanMonitorNode
			if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &l); err != nil {
				return err
			}
			if len(l.Status.IPBlocks) != 0 {
				return fmt.Errorf("%s still reports %v", name, l.Status.IPBlocks)
			}
		}
		return nil
	})
	time.Sleep(1100 * time.Millisecond) // one rollup interval
	if b := getBlock(t, "temporary"); b.Status.MatchedPackets != 20 || b.Status.DroppedPackets != 8 || b.Status.Nodes.Desired != 0 {
		t.Errorf("after expiry: matched %d dropped %d nodes %+v, want 20, 8 and none desired",
			b.Status.MatchedPackets, b.Status.DroppedPackets, b.Status.Nodes)
	}
}

// TestProtectedAddresses: what a block covers of the API server endpoint,
// the node addresses, the monitors' protectedCIDRs and the agents'
// exemptions is listed in exemptedAddresses.
func TestProtectedAddresses(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	endpoint := netip.MustParseAddr(apiServerEndpoint(t))
	createNodes(t,
		node{name: "node-1", ips: []string{"198.18.0.10", "2001:db8::10"}},
		node{name: "node-2", ips: []string{"198.18.5.20"}},
	)
	startController(t, false)
	m := monitor("lan", time.Second)
	m.Spec.ProtectedCIDRs = []string{"198.18.1.0/24", "2001:db8::1", "203.0.113.0/24"}
	create(t, m)
	// The agent also protects the node's default gateway.
	startAgents(t, agentOptions{setup: func(node string, k *fake.Kernel) {
		if node == "node-1" {
			k.SetAddresses(nil, []netip.Addr{netip.MustParseAddr("198.18.0.254")})
		}
	}}, "node-1", "node-2")

	endpointNet := netip.PrefixFrom(endpoint, 8).Masked().String()
	create(t,
		ipBlock("wide", endpointNet, "198.18.0.0/16", "2001:db8::/64"),
		ipBlock("narrow", "198.18.1.7", "198.19.0.0/16"),
	)
	want := []string{endpoint.String(), "198.18.0.10", "198.18.0.254", "198.18.1.0/24", "198.18.5.20", "2001:db8::1", "2001:db8::10"}
	slices.SortFunc(want, func(a, b string) int {
		pa, _ := netip.ParsePrefix(a)
		if !pa.IsValid() {
			pa = netip.PrefixFrom(netip.MustParseAddr(a), 128)
		}
		pb, _ := netip.ParsePrefix(b)
		if !pb.IsValid() {
			pb = netip.PrefixFrom(netip.MustParseAddr(b), 128)
		}
		return pa.Addr().Compare(pb.Addr())
	})
	for name, want := range map[string][]string{
		"wide":   want,
		"narrow": {"198.18.1.7"}, // a blocked host inside a protected CIDR
	} {
		eventually(t, 10*time.Second, func() error {
			b := getBlock(t, name)
			if !slices.Equal(b.Status.ExemptedAddresses, want) {
				return fmt.Errorf("%s exemptedAddresses %v, want %v", name, b.Status.ExemptedAddresses, want)
			}
			return nil
		})
	}
}

// TestTooManyIPBlocks: a node whose datapath holds 2 rules, with 3
// IPBlocks applying, enforces the 2 oldest, reports the newest in its
// LanMonitorNode status.ipBlocksOverCapacity, and the IPBlock controller
// says why that block is not enforced (TooManyIPBlocks); the agent logs it
// once, not on every sync. When an older block goes, the newest is
// enforced and the report is cleared.
func TestTooManyIPBlocks(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	createNodes(t, node{name: "node-1"})
	startController(t, false)
	create(t, monitor("lan", time.Second))
	agents := startAgents(t, agentOptions{maxRules: 2}, "node-1")
	create(t, ipBlock("a-old", "198.18.1.0/24"))
	create(t, ipBlock("b-mid", "198.18.2.0/24"))
	waitEnforced(t, "a-old", 1)
	waitEnforced(t, "b-mid", 1)
	create(t, ipBlock("c-new", "198.18.3.0/24")) // the newest: created last, and last by name
	eventually(t, 20*time.Second, func() error {
		b := getBlock(t, "c-new")
		c := findCondition(b.Status.Conditions, lanmonitorv1alpha1.ConditionEnforced)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != lanmonitorv1alpha1.ReasonTooManyIPBlocks ||
			c.ObservedGeneration != b.Generation || b.Status.Nodes != (lanmonitorv1alpha1.BlockNodeCounts{Desired: 1}) {
			return fmt.Errorf("c-new: Enforced %+v, nodes %+v", c, b.Status.Nodes)
		}
		want := "1 node(s) apply more IPBlocks than their datapath holds rules (agent --max-rules) and leave this one, among the newest, out; generation 1 applied on 0 of 1 nodes; waiting for node-1"
		if c.Message != want {
			return fmt.Errorf("c-new: message %q, want %q", c.Message, want)
		}
		return nil
	})
	if got := getNode(t, "node-1").Status.IPBlocksOverCapacity; !slices.Equal(got, []string{"c-new"}) {
		t.Errorf("status.ipBlocksOverCapacity %v, want [c-new]", got)
	}
	source := func() []string {
		var out []string
		for p := range agents["node-1"].datapath(t).Tables()[bpf.TableSource] {
			out = append(out, p.String())
		}
		slices.Sort(out)
		return out
	}
	if got, want := source(), []string{"198.18.1.0/24", "198.18.2.0/24"}; !slices.Equal(got, want) {
		t.Errorf("source table %v, want %v", got, want)
	}
	waitEnforced(t, "a-old", 1)
	waitEnforced(t, "b-mid", 1)
	time.Sleep(2 * time.Second) // two report intervals: syncs that must not log again
	if n := agents["node-1"].Errors(); n != 1 {
		t.Errorf("the agent logged %d errors, want 1 (the capacity, once)", n)
	}

	if err := env.Client.Delete(context.Background(), getBlock(t, "a-old")); err != nil {
		t.Fatal(err)
	}
	waitEnforced(t, "c-new", 1)
	eventually(t, 10*time.Second, func() error {
		if got := getNode(t, "node-1").Status.IPBlocksOverCapacity; len(got) != 0 {
			return fmt.Errorf("status.ipBlocksOverCapacity %v, want none", got)
		}
		if got, want := source(), []string{"198.18.2.0/24", "198.18.3.0/24"}; !slices.Equal(got, want) {
			return fmt.Errorf("source table %v, want %v", got, want)
		}
		return nil
	})
}

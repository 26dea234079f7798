package controllers_test

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

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

// TestRuleIDs: rule IDs are unique, survive a controller restart, and a
// freed ID is reused only once no node mentions it.
func TestRuleIDs(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	ctx := context.Background()
	createNodes(t, node{name: "node-1"}, node{name: "node-2"})
	ctl := startController(t, true)
	create(t, monitor("lan", time.Second))
	agents := startAgents(t, agentOptions{}, "node-1", "node-2")

	names := []string{"b1", "b2", "b3", "b4", "b5"}
	for i, n := range names {
		create(t, ipBlock(n, fmt.Sprintf("198.18.0.%d", i+1)))
	}
	ids := map[string]int32{}
	for _, n := range names {
		ids[n] = waitEnforced(t, n, 2).Status.RuleID
	}
	var got []int32
	for _, n := range names {
		got = append(got, ids[n])
	}
	slices.Sort(got)
	if want := []int32{1, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Fatalf("rule IDs %v, want %v (unique, lowest first)", got, want)
	}

	// Restart: a new manager (after the old one released the lease) keeps
	// every ID.
	ctl.stop()
	startController(t, true)
	create(t, ipBlock("b6", "198.18.0.6"))
	if id := waitEnforced(t, "b6", 2).Status.RuleID; id != 6 {
		t.Errorf("b6 rule ID %d, want 6", id)
	}
	for _, n := range names {
		if id := getBlock(t, n).Status.RuleID; id != ids[n] {
			t.Errorf("%s rule ID %d after restart, want %d", n, id, ids[n])
		}
	}

	// Free an ID while node-2's agent is down: its status still holds the
	// rule, so the ID must not be handed out again.
	freed := ids["b2"]
	if err := agents["node-2"].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, getBlock(t, "b2")); err != nil {
		t.Fatal(err)
	}
	create(t, ipBlock("b7", "198.18.0.7"))
	eventually(t, 10*time.Second, func() error {
		if id := getBlock(t, "b7").Status.RuleID; id != 7 {
			return fmt.Errorf("b7 rule ID %d, want 7 (%d is still reported by node-2)", id, freed)
		}
		return nil
	})
	// node-2's agent comes back, applies the spec without b2 and with b7.
	startAgents(t, agentOptions{}, "node-2")
	waitEnforced(t, "b7", 2)
	create(t, ipBlock("b8", "198.18.0.8"))
	if id := waitEnforced(t, "b8", 2).Status.RuleID; id != freed {
		t.Errorf("b8 rule ID %d, want the freed %d", id, freed)
	}

	// A hand-edited status claiming another block's ID: the older block
	// keeps it, the newer gets its own back.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		b8 := getBlock(t, "b8")
		b8.Status.RuleID = ids["b1"]
		return env.Client.Status().Update(ctx, b8)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if id := getBlock(t, "b8").Status.RuleID; id != freed {
			return fmt.Errorf("b8 rule ID %d, want %d", id, freed)
		}
		return nil
	})
	if id := getBlock(t, "b1").Status.RuleID; id != ids["b1"] {
		t.Errorf("b1 rule ID %d, want %d", id, ids["b1"])
	}
	// Every node carries each rule ID once, in rule ID order. b1 to b5
	// got 1 to 5 in the order their creations raced (checked above), so
	// the expectation uses the IDs observed: b8 holds b2's, b6 and b7
	// got 6 and 7.
	final := map[string]int32{"b1": ids["b1"], "b3": ids["b3"], "b4": ids["b4"], "b5": ids["b5"], "b6": 6, "b7": 7, "b8": freed}
	byID := slices.Collect(maps.Keys(final))
	slices.SortFunc(byID, func(a, b string) int { return cmp.Compare(final[a], final[b]) })
	var want []string
	for _, n := range byID {
		want = append(want, fmt.Sprintf("%s=%d", n, final[n]))
	}
	eventually(t, 10*time.Second, func() error {
		var lmn lanmonitorv1alpha1.LanMonitorNode
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "node-1"}, &lmn); err != nil {
			return err
		}
		var refs []string
		for _, r := range lmn.Spec.IPBlocks {
			refs = append(refs, fmt.Sprintf("%s=%d", r.Name, r.RuleID))
		}
		if !slices.Equal(refs, want) {
			return fmt.Errorf("node-1 ipBlocks %v, want %v", refs, want)
		}
		return nil
	})
}

// TestExpiry: a block is lifted from every node, and marked Expired, within
// a second after expiresAt (and not before).
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
	// metav1.Time has a resolution of one second.
	expiresAt := time.Now().Truncate(time.Second).Add(3 * time.Second)
	updateBlock(t, "temporary", func(s *lanmonitorv1alpha1.IPBlockSpec) { s.ExpiresAt = &metav1.Time{Time: expiresAt} })
	b = waitEnforced(t, "temporary", 2)
	if c := findCondition(b.Status.Conditions, lanmonitorv1alpha1.ConditionExpired); c.Status != metav1.ConditionFalse ||
		c.Message != "expires at "+expiresAt.UTC().Format(time.RFC3339) {
		t.Errorf("Expired before expiry: %+v", c)
	}
	if time.Now().After(expiresAt) {
		t.Fatal("too slow: the block expired before the new generation was enforced")
	}

	// Poll both every 10ms. A poll whose answer arrived before expiresAt must
	// still show the block; the first poll that shows it lifted (marked)
	// bounds the delay from above, by the time its answer arrived.
	lifted := func() bool {
		var l lanmonitorv1alpha1.LanMonitorNodeList
		if err := env.Client.List(ctx, &l); err != nil {
			t.Fatal(err)
		}
		for _, n := range l.Items {
			if slices.ContainsFunc(n.Spec.IPBlocks, func(r lanmonitorv1alpha1.NodeIPBlockRef) bool { return r.Name == "temporary" }) {
				return false
			}
		}
		return true
	}
	marked := func() bool {
		c := findCondition(getBlock(t, "temporary").Status.Conditions, lanmonitorv1alpha1.ConditionExpired)
		return c != nil && c.Status == metav1.ConditionTrue
	}
	pending := map[string]func() bool{"lifted from the nodes": lifted, "marked Expired": marked}
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
				if d > time.Second {
					t.Errorf("%s %v after expiresAt, want within 1s", what, d)
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

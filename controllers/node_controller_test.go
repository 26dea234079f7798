package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// TestNodeSelection: a monitor selecting two of three labelled nodes gets
// exactly two LanMonitorNodes with the resolved spec; relabelling and
// deleting nodes creates and removes them; deleting the monitor removes them.
func TestNodeSelection(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	ctx := context.Background()
	endpoint := apiServerEndpoint(t)
	createNodes(t,
		node{name: "node-a", labels: map[string]string{"lan": "yes"}},
		node{name: "node-b", labels: map[string]string{"lan": "yes"}},
		node{name: "node-c", labels: map[string]string{"lan": "no"}},
	)
	startController(t, false)
	m := &lanmonitorv1alpha1.LanMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "lan"},
		Spec: lanmonitorv1alpha1.LanMonitorSpec{
			NodeSelector:   &metav1.LabelSelector{MatchLabels: map[string]string{"lan": "yes"}},
			Interface:      "lan0",
			Promiscuous:    ptr.To(false),
			XDPMode:        lanmonitorv1alpha1.XDPModeGeneric,
			InternalCIDRs:  []string{"198.18.0.0/15", "2001:db8::/32"},
			TopN:           5,
			ReportInterval: &metav1.Duration{Duration: 2 * time.Second},
			ProtectedCIDRs: []string{"198.18.0.1", "2001:db8::1"},
			FlowSampling:   1000,
		},
	}
	create(t, m)

	want := lanmonitorv1alpha1.LanMonitorNodeSpec{Interfaces: []lanmonitorv1alpha1.NodeInterfaceSpec{{
		Monitor:           "lan",
		Interface:         "lan0",
		Promiscuous:       false,
		XDPMode:           lanmonitorv1alpha1.XDPModeGeneric,
		InternalCIDRs:     []string{"198.18.0.0/15", "2001:db8::/32"},
		TopN:              5,
		ReportInterval:    metav1.Duration{Duration: 2 * time.Second},
		MaxTrackedSources: 65536,
		ProtectedCIDRs:    []string{"198.18.0.1", "2001:db8::1", endpoint},
		FlowSampling:      1000,
	}}}
	expectNodes := func(names ...string) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			var l lanmonitorv1alpha1.LanMonitorNodeList
			if err := env.Client.List(ctx, &l); err != nil {
				return err
			}
			var got []string
			for _, n := range l.Items {
				got = append(got, n.Name)
				if !equality.Semantic.DeepEqual(n.Spec, want) {
					return fmt.Errorf("%s spec:\n got %+v\nwant %+v", n.Name, n.Spec, want)
				}
				owners := []metav1.OwnerReference{{APIVersion: "lanmonitor.io/v1alpha1", Kind: "LanMonitor", Name: "lan", UID: m.UID}}
				if !equality.Semantic.DeepEqual(n.OwnerReferences, owners) {
					return fmt.Errorf("%s owners: %+v", n.Name, n.OwnerReferences)
				}
			}
			if !slices.Equal(got, names) {
				return fmt.Errorf("LanMonitorNodes %v, want %v", got, names)
			}
			return nil
		})
	}
	expectNodes("node-a", "node-b")
	expectReady := func(desired int32) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			var got lanmonitorv1alpha1.LanMonitor
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(m), &got); err != nil {
				return err
			}
			if got.Status.Nodes.Desired != desired || got.Status.Display.Nodes != fmt.Sprintf("0/%d", desired) {
				return fmt.Errorf("status nodes %+v display %q, want desired %d", got.Status.Nodes, got.Status.Display.Nodes, desired)
			}
			return nil
		})
	}
	expectReady(2)

	relabel := func(name, value string) {
		t.Helper()
		var n corev1.Node
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
			t.Fatal(err)
		}
		n.Labels["lan"] = value
		if err := env.Client.Update(ctx, &n); err != nil {
			t.Fatal(err)
		}
	}
	relabel("node-c", "yes")
	expectNodes("node-a", "node-b", "node-c")
	expectReady(3)
	relabel("node-a", "no")
	expectNodes("node-b", "node-c")

	if err := env.Client.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}); err != nil {
		t.Fatal(err)
	}
	expectNodes("node-c")
	expectReady(1)

	if err := env.Client.Delete(ctx, m); err != nil {
		t.Fatal(err)
	}
	expectNodes()
}

// TestInterfaceConflict: two monitors naming the same interface on a node;
// the older one (by creationTimestamp, even with the later name) runs there,
// the other gets conditions naming the node and the winner, and takes over
// once the winner is gone.
func TestInterfaceConflict(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	ctx := context.Background()
	createNodes(t,
		node{name: "node-1", labels: map[string]string{"zone": "a"}},
		node{name: "node-2", labels: map[string]string{"zone": "b"}},
	)
	startController(t, false)
	older := &lanmonitorv1alpha1.LanMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "z-older"},
		Spec: lanmonitorv1alpha1.LanMonitorSpec{
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"zone": "a"}},
			Interface:    "eth0",
		},
	}
	create(t, older)
	// creationTimestamp has a resolution of one second.
	time.Sleep(1100 * time.Millisecond)
	newer := &lanmonitorv1alpha1.LanMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "a-newer"},
		Spec:       lanmonitorv1alpha1.LanMonitorSpec{Interface: "eth0"}, // every node
	}
	other := &lanmonitorv1alpha1.LanMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "m-other-interface"},
		Spec:       lanmonitorv1alpha1.LanMonitorSpec{Interface: "eth1"},
	}
	create(t, newer, other)

	monitorsOn := func(spec lanmonitorv1alpha1.LanMonitorNodeSpec) []string {
		var out []string
		for _, i := range spec.Interfaces {
			out = append(out, i.Monitor)
		}
		return out
	}
	expectSpecs := func(want map[string][]string) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			for name, monitors := range want {
				var n lanmonitorv1alpha1.LanMonitorNode
				if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
					return err
				}
				if got := monitorsOn(n.Spec); !slices.Equal(got, monitors) {
					return fmt.Errorf("%s runs %v, want %v", name, got, monitors)
				}
			}
			return nil
		})
	}
	expectSpecs(map[string][]string{
		"node-1": {"m-other-interface", "z-older"},
		"node-2": {"a-newer", "m-other-interface"},
	})

	type cond struct {
		status metav1.ConditionStatus
		reason string
		msg    string
	}
	expectConditions := func(name string, desired int32, ready, degraded cond) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			var m lanmonitorv1alpha1.LanMonitor
			if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &m); err != nil {
				return err
			}
			if m.Status.Nodes.Desired != desired {
				return fmt.Errorf("%s desired %d, want %d", name, m.Status.Nodes.Desired, desired)
			}
			for typ, want := range map[string]cond{lanmonitorv1alpha1.ConditionReady: ready, lanmonitorv1alpha1.ConditionDegraded: degraded} {
				c := findCondition(m.Status.Conditions, typ)
				if c == nil || c.Status != want.status || c.Reason != want.reason || c.Message != want.msg || c.ObservedGeneration != m.Generation {
					return fmt.Errorf("%s %s: got %+v, want %+v", name, typ, c, want)
				}
			}
			return nil
		})
	}
	expectConditions("a-newer", 1,
		cond{metav1.ConditionFalse, "NodesNotReady", "attached on 0 of 1 nodes"},
		cond{metav1.ConditionTrue, "InterfaceConflict",
			`interface "eth0" is monitored by an older LanMonitor on 1 node(s): node node-1 (held by LanMonitor z-older)`})
	expectConditions("z-older", 1,
		cond{metav1.ConditionFalse, "NodesNotReady", "attached on 0 of 1 nodes"},
		cond{metav1.ConditionFalse, "AsExpected", "no interface conflict, and every node that reported is attached"})

	// Move node-2 into zone a: a-newer now loses everywhere.
	var n2 corev1.Node
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "node-2"}, &n2); err != nil {
		t.Fatal(err)
	}
	n2.Labels["zone"] = "a"
	if err := env.Client.Update(ctx, &n2); err != nil {
		t.Fatal(err)
	}
	expectSpecs(map[string][]string{
		"node-1": {"m-other-interface", "z-older"},
		"node-2": {"m-other-interface", "z-older"},
	})
	expectConditions("a-newer", 0,
		cond{metav1.ConditionFalse, "InterfaceConflict",
			`runs on no node: interface "eth0" is monitored by an older LanMonitor on 2 node(s): node node-1 (held by LanMonitor z-older), node node-2 (held by LanMonitor z-older)`},
		cond{metav1.ConditionTrue, "InterfaceConflict",
			`interface "eth0" is monitored by an older LanMonitor on 2 node(s): node node-1 (held by LanMonitor z-older), node node-2 (held by LanMonitor z-older)`})
	// The loser still owns the nodes it selects, for garbage collection.
	var n1 lanmonitorv1alpha1.LanMonitorNode
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "node-1"}, &n1); err != nil {
		t.Fatal(err)
	}
	var owners []string
	for _, o := range n1.OwnerReferences {
		owners = append(owners, o.Name)
	}
	if want := []string{"a-newer", "m-other-interface", "z-older"}; !slices.Equal(owners, want) {
		t.Errorf("node-1 owners %v, want %v", owners, want)
	}

	// The winner goes: the loser takes over.
	if err := env.Client.Delete(ctx, older); err != nil {
		t.Fatal(err)
	}
	expectSpecs(map[string][]string{
		"node-1": {"a-newer", "m-other-interface"},
		"node-2": {"a-newer", "m-other-interface"},
	})
	expectConditions("a-newer", 2,
		cond{metav1.ConditionFalse, "NodesNotReady", "attached on 0 of 2 nodes"},
		cond{metav1.ConditionFalse, "AsExpected", "no interface conflict, and every node that reported is attached"})
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/controllers"
)

// appliedBlocks lists the IPBlocks a node's agent reports applied, sorted.
func appliedBlocks(t testing.TB, node string) []string {
	t.Helper()
	var n lanmonitorv1alpha1.LanMonitorNode
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: node}, &n); err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, r := range n.Status.IPBlocks {
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}

// touchNode changes a label of the node: both the LanMonitorNode and the
// IPBlock reconcilers run again (with no clock to wait for).
func touchNode(t testing.TB, name, value string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var n corev1.Node
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &n); err != nil {
			return err
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels["test.lanmonitor.io/tick"] = value
		return env.Client.Update(context.Background(), &n)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// expiredState is a block's Expired condition (status/reason/message and
// whether it is for the current generation) and its Enforced condition.
func expiredState(t testing.TB, name string) string {
	t.Helper()
	b := getBlock(t, name)
	e := findCondition(b.Status.Conditions, lanmonitorv1alpha1.ConditionExpired)
	f := findCondition(b.Status.Conditions, lanmonitorv1alpha1.ConditionEnforced)
	if e == nil || f == nil {
		return fmt.Sprintf("conditions %+v", b.Status.Conditions)
	}
	return fmt.Sprintf("Expired=%s/%s %q current=%t; Enforced=%s/%s", e.Status, e.Reason, e.Message,
		e.ObservedGeneration == b.Generation, f.Status, f.Reason)
}

// TestExpiryClockSteps: the controller compares expiresAt with its wall
// clock (a fake one here, stepped by the test) at every reconcile. A clock
// stepped forward past expiresAt, or a resume from a suspend, lifts the
// block (from the LanMonitorNode spec, Expired=True) at the next
// reconcile, with no timer having fired for it; a clock stepped back after
// the block was lifted does not enforce it again, neither in the running
// controller nor in a restarted one.
func TestExpiryClockSteps(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0)
	createNodes(t, node{name: "node-1"})
	ctrl := startControllerWith(t, false, controllers.Options{Clock: clk})
	create(t, monitor("lan", time.Second))
	startAgents(t, agentOptions{}, "node-1")
	temporary, long := ipBlock("temporary", "198.18.1.0/24"), ipBlock("long", "198.18.2.0/24")
	temporary.Spec.ExpiresAt = &metav1.Time{Time: t0.Add(time.Hour)}
	long.Spec.ExpiresAt = &metav1.Time{Time: t0.Add(24 * time.Hour)}
	create(t, temporary, long)
	waitEnforced(t, "temporary", 1)
	waitEnforced(t, "long", 1)
	if got, want := expiredState(t, "temporary"), `Expired=False/NotExpired "expires at 2030-01-01T13:00:00Z" current=true; Enforced=True/Enforced`; got != want {
		t.Errorf("before expiresAt: %s, want %s", got, want)
	}
	if got, want := appliedBlocks(t, "node-1"), []string{"long", "temporary"}; !slices.Equal(got, want) {
		t.Errorf("spec before expiresAt: %v, want %v", got, want)
	}

	// The clock steps forward past expiresAt: lifted at the next reconcile.
	clk.SetTime(t0.Add(time.Hour + time.Second))
	touchNode(t, "node-1", "forward")
	lifted := `Expired=True/Expired "expired at 2030-01-01T13:00:00Z and lifted from every node" current=true; Enforced=False/Expired`
	eventually(t, 10*time.Second, func() error {
		if got, want := appliedBlocks(t, "node-1"), []string{"long"}; !slices.Equal(got, want) {
			return fmt.Errorf("spec %v, want %v", got, want)
		}
		if got := expiredState(t, "temporary"); got != lifted {
			return fmt.Errorf("temporary: %s, want %s", got, lifted)
		}
		return nil
	})

	// The clock steps back before expiresAt. A new block makes the node
	// spec be computed again at this time (and the block statuses rolled
	// up again, as its report arrives): temporary stays lifted.
	stillLifted := func(step string, want []string) {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			if got := appliedBlocks(t, "node-1"); !slices.Equal(got, want) {
				t.Fatalf("%s: spec %v, want %v", step, got, want)
			}
			if got := expiredState(t, "temporary"); got != lifted {
				t.Fatalf("%s: temporary %s, want %s", step, got, lifted)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	clk.SetTime(t0)
	touchNode(t, "node-1", "back")
	create(t, ipBlock("marker", "198.18.3.0/24"))
	waitEnforced(t, "marker", 1)
	stillLifted("stepped back", []string{"long", "marker"})

	// A restarted controller, its clock still before expiresAt, remembers
	// nothing but the Expired condition: temporary stays lifted.
	ctrl.stop()
	startControllerWith(t, false, controllers.Options{Clock: clk})
	create(t, ipBlock("marker-2", "198.18.4.0/24"))
	waitEnforced(t, "marker-2", 1)
	stillLifted("restarted", []string{"long", "marker", "marker-2"})

	// A suspend of thirty days, then the resume: long is lifted at the
	// next reconcile.
	clk.SetTime(t0.Add(30 * 24 * time.Hour))
	touchNode(t, "node-1", "resumed")
	eventually(t, 10*time.Second, func() error {
		if got, want := appliedBlocks(t, "node-1"), []string{"marker", "marker-2"}; !slices.Equal(got, want) {
			return fmt.Errorf("spec %v, want %v", got, want)
		}
		want := `Expired=True/Expired "expired at 2030-01-02T12:00:00Z and lifted from every node" current=true; Enforced=False/Expired`
		if got := expiredState(t, "long"); got != want {
			return fmt.Errorf("long: %s, want %s", got, want)
		}
		return nil
	})

	// A new generation with a later expiresAt is decided afresh: enforced
	// again, whatever the earlier one did.
	updateBlock(t, "temporary", func(s *lanmonitorv1alpha1.IPBlockSpec) {
		s.ExpiresAt = &metav1.Time{Time: t0.Add(31 * 24 * time.Hour)}
	})
	waitEnforced(t, "temporary", 1)
	if got, want := expiredState(t, "temporary"), `Expired=False/NotExpired "expires at 2030-02-01T12:00:00Z" current=true; Enforced=True/Enforced`; got != want {
		t.Errorf("new generation: %s, want %s", got, want)
	}
}

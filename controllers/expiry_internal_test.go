package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// TestExpiryDecision: on a fake wall clock, a block is expired from its
// expiresAt on; once seen expired it stays so when the clock steps back
// (in memory, and across a restart by its Expired condition), until a new
// generation; the requeue for an expiresAt is at most maxExpiryWait, so a
// clock step or a suspend delays lifting by a minute at most.
func TestExpiryDecision(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0)
	e := newExpiry(clk)
	b := &lanmonitorv1alpha1.IPBlock{
		ObjectMeta: metav1.ObjectMeta{Name: "temporary", UID: "uid-1", Generation: 1},
		Spec:       lanmonitorv1alpha1.IPBlockSpec{CIDRs: []string{"198.18.0.0/24"}, ExpiresAt: &metav1.Time{Time: t0.Add(time.Hour)}},
	}
	step := func(what string, at time.Time, wantExpired bool, wantRequeue time.Duration) {
		t.Helper()
		clk.SetTime(at)
		now := e.now()
		if got := e.expired(b, now); got != wantExpired {
			t.Errorf("%s: expired %v, want %v", what, got, wantExpired)
		}
		if got := expiryRequeue(b, now); got != wantRequeue {
			t.Errorf("%s: requeue after %v, want %v", what, got, wantRequeue)
		}
	}
	step("at t0", t0, false, maxExpiryWait)
	step("20s before", t0.Add(time.Hour-20*time.Second), false, 20*time.Second)
	step("stepped forward", t0.Add(time.Hour+time.Second), true, 0)
	step("stepped back", t0, true, maxExpiryWait)

	// A restarted controller with the clock still stepped back: only the
	// Expired condition of this generation keeps the block lifted.
	e = newExpiry(clk)
	if e.expired(b, e.now()) {
		t.Error("restarted, no Expired condition: expired, want decided on the clock (not expired)")
	}
	b.Status.Conditions = []metav1.Condition{{Type: lanmonitorv1alpha1.ConditionExpired, Status: metav1.ConditionTrue,
		Reason: lanmonitorv1alpha1.ReasonExpired, ObservedGeneration: 1}}
	if !e.expired(b, e.now()) {
		t.Error("restarted, Expired=True for the generation: not expired, want expired")
	}

	// A new generation (expiresAt moved) is decided afresh, by both.
	b.Generation, b.Spec.ExpiresAt = 2, &metav1.Time{Time: t0.Add(3 * time.Hour)}
	step("new generation", t0, false, maxExpiryWait)
	e.forget("temporary")
	if len(e.lifted) != 0 {
		t.Errorf("forget left %v", e.lifted)
	}
	// Another object of the same name is not the one seen expired.
	b.Generation, b.Spec.ExpiresAt, b.Status.Conditions = 1, &metav1.Time{Time: t0}, nil
	step("expired", t0, true, 0)
	b.UID, b.Spec.ExpiresAt = "uid-2", &metav1.Time{Time: t0.Add(time.Hour)}
	step("recreated", t0, false, maxExpiryWait)
}

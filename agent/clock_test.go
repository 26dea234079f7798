package agent

import (
	"context"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/bpf"
)

// Tests of expiry and rates under clock steps and suspends, on a fake wall
// clock: no sleeping, no kernel.

func blockNames(blocks []Block) []string {
	out := []string{}
	for _, b := range blocks {
		out = append(out, b.Name)
	}
	return out
}

func expiringBlock(name string, uid types.UID, generation int64, cidr string, expiresAt time.Time) *v1alpha1.IPBlock {
	b := &v1alpha1.IPBlock{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: uid, Generation: generation},
		Spec:       v1alpha1.IPBlockSpec{CIDRs: []string{cidr}},
	}
	if !expiresAt.IsZero() {
		b.Spec.ExpiresAt = &metav1.Time{Time: expiresAt}
	}
	return b
}

// TestKubeExpiryClockSteps: in Kubernetes mode every sync compares
// expiresAt with the wall clock read then. A clock stepped forward past
// expiresAt, or a suspend, lifts the block at the next sync; the sync's
// wake-up is never more than maxIdle away; a clock stepped back after the
// block was lifted does not enforce it again, until a new generation; a
// block the controller marked Expired for its generation is lifted
// whatever the clock says.
func TestKubeExpiryClockSteps(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0)

	marked := expiringBlock("marked", "uid-marked", 4, "198.18.4.0/24", t0.Add(time.Hour))
	marked.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionExpired, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonExpired, ObservedGeneration: 4, LastTransitionTime: metav1.Time{Time: t0}}}
	markedBefore := expiringBlock("marked-before", "uid-marked-before", 6, "198.18.6.0/24", t0.Add(time.Hour))
	markedBefore.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionExpired, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonExpired, ObservedGeneration: 5, LastTransitionTime: metav1.Time{Time: t0}}}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		expiringBlock("permanent", "uid-permanent", 1, "198.18.1.0/24", time.Time{}),
		expiringBlock("temporary", "uid-temporary", 1, "198.18.2.0/24", t0.Add(time.Hour)),
		expiringBlock("later", "uid-later", 1, "198.18.3.0/24", t0.Add(2*time.Hour)),
		marked, markedBefore,
	).Build()
	a := &nodeAgent{log: slog.New(slog.DiscardHandler), cache: c, client: c, clock: clk,
		o: KubernetesOptions{Manager: Options{MaxRules: 4096}}}
	lmn := &v1alpha1.LanMonitorNode{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Spec: v1alpha1.LanMonitorNodeSpec{
		Interfaces: []v1alpha1.NodeInterfaceSpec{{Monitor: "lan"}}}}
	check := func(step string, wantBlocks []string, wantExpiry time.Time, wantWait time.Duration) {
		t.Helper()
		now := a.clock.Now()
		blocks, expiry, err := a.blocks(ctx, lmn, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(wantBlocks)
		if got := slices.Sorted(slices.Values(blockNames(blocks))); !reflect.DeepEqual(got, wantBlocks) || !expiry.Equal(wantExpiry) {
			t.Errorf("%s: blocks %v, next expiry %v; want %v, %v", step, got, expiry, wantBlocks, wantExpiry)
		}
		if got := expiryWait(now, expiry); got != wantWait {
			t.Errorf("%s: wake-up in %v, want %v", step, got, wantWait)
		}
	}

	// "marked" is Expired for its generation (the controller saw it
	// expire, then this clock stepped back, or the agent restarted):
	// lifted. "marked-before" was marked for an older generation: decided
	// on the clock.
	check("at t0", []string{"permanent", "temporary", "later", "marked-before"}, t0.Add(time.Hour), time.Minute)
	clk.SetTime(t0.Add(time.Hour - 30*time.Second))
	check("30s before expiresAt", []string{"permanent", "temporary", "later", "marked-before"}, t0.Add(time.Hour), 30*time.Second+10*time.Millisecond)

	// The clock steps forward past expiresAt: no timer fired for it; the
	// next sync (at most a minute away) lifts the block.
	clk.SetTime(t0.Add(time.Hour + 5*time.Second))
	check("stepped forward past expiresAt", []string{"permanent", "later"}, t0.Add(2*time.Hour), time.Minute)

	// The clock steps back before expiresAt: the lifted blocks stay lifted.
	clk.SetTime(t0)
	check("stepped back", []string{"permanent", "later"}, t0.Add(2*time.Hour), time.Minute)

	// A suspend of three days: lifted on resume.
	clk.SetTime(t0.Add(72 * time.Hour))
	check("resumed from suspend", []string{"permanent"}, time.Time{}, time.Minute)
	clk.SetTime(t0)
	check("stepped back after the suspend", []string{"permanent"}, time.Time{}, time.Minute)

	// Later syncs on the stepped-back clock: still lifted, remembered
	// while the object exists unchanged.
	check("synced again", []string{"permanent"}, time.Time{}, time.Minute)
	if _, ok := a.lifted["temporary"]; !ok {
		t.Errorf("lifted %v forgot temporary while it exists unchanged", a.lifted)
	}

	// A new generation (expiresAt moved to t0+3h) is decided afresh.
	tmp := expiringBlock("temporary", "uid-temporary", 2, "198.18.2.0/24", t0.Add(3*time.Hour))
	var cur v1alpha1.IPBlock
	if err := c.Get(ctx, client.ObjectKey{Name: "temporary"}, &cur); err != nil {
		t.Fatal(err)
	}
	tmp.ResourceVersion = cur.ResourceVersion
	if err := c.Update(ctx, tmp); err != nil {
		t.Fatal(err)
	}
	check("new generation", []string{"permanent", "temporary"}, t0.Add(3*time.Hour), time.Minute)

	// A deleted block is forgotten.
	if err := c.Delete(ctx, expiringBlock("later", "", 0, "", time.Time{})); err != nil {
		t.Fatal(err)
	}
	check("later deleted", []string{"permanent", "temporary"}, t0.Add(3*time.Hour), time.Minute)
	if got, want := slices.Sorted(maps.Keys(a.lifted)), []string{"marked", "marked-before"}; !reflect.DeepEqual(got, want) {
		t.Errorf("lifted %v, want %v (later deleted, temporary at a new generation)", got, want)
	}
}

// TestExpiryWaitCapped: the wake-up for an expiresAt is 10ms after it, at
// most maxIdle (a minute) away, at once for one that passed, maxIdle
// without any.
func TestExpiryWaitCapped(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		expiry time.Time
		want   time.Duration
	}{
		{time.Time{}, time.Minute},
		{now.Add(24 * time.Hour), time.Minute},
		{now.Add(time.Minute), time.Minute},
		{now.Add(59 * time.Second), 59*time.Second + 10*time.Millisecond},
		{now, 10 * time.Millisecond},
		{now.Add(-time.Hour), 10 * time.Millisecond},
	} {
		if got := expiryWait(now, c.expiry); got != c.want {
			t.Errorf("expiryWait(now, now%+v) = %v, want %v", c.expiry.Sub(now), got, c.want)
		}
	}
}

// TestStandaloneExpiryClockSteps: standalone mode lifts a block whose
// expiresAt passed at the time of the reload, keeps it lifted when the
// clock steps back (a reload after an edit does not enforce it again),
// decides an edited expiresAt afresh, and forgets a block removed from the
// files.
func TestStandaloneExpiryClockSteps(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0)
	mf := &Manifests{Blocks: []v1alpha1.IPBlock{
		*expiringBlock("permanent", "", 0, "198.18.1.0/24", time.Time{}),
		*expiringBlock("temporary", "", 0, "198.18.2.0/24", t0.Add(time.Hour)),
	}}
	lifted := liftedBlocks{}
	check := func(step string, wantBlocks []string, wantNext time.Time) {
		t.Helper()
		cfg, next, err := standaloneConfig("lan0", mf, clk.Now(), 4096, lifted)
		if err != nil {
			t.Fatal(err)
		}
		if got := blockNames(cfg.Blocks); !reflect.DeepEqual(got, wantBlocks) || !next.Equal(wantNext) {
			t.Errorf("%s: blocks %v, next expiry %v; want %v, %v", step, got, next, wantBlocks, wantNext)
		}
	}
	check("at t0", []string{"permanent", "temporary"}, t0.Add(time.Hour))
	clk.SetTime(t0.Add(time.Hour))
	check("at expiresAt", []string{"permanent"}, time.Time{})
	clk.SetTime(t0)
	check("stepped back", []string{"permanent"}, time.Time{})
	// StandaloneConfig alone remembers nothing: the wall clock decides.
	if cfg, _, err := StandaloneConfig("lan0", mf, clk.Now(), 4096); err != nil || len(cfg.Blocks) != 2 {
		t.Errorf("StandaloneConfig at t0: %v, %v; want both blocks", blockNames(cfg.Blocks), err)
	}
	// The file is edited: expiresAt moved to t0+3h.
	mf.Blocks[1].Spec.ExpiresAt = &metav1.Time{Time: t0.Add(3 * time.Hour)}
	check("expiresAt edited", []string{"permanent", "temporary"}, t0.Add(3*time.Hour))
	clk.SetTime(t0.Add(30 * 24 * time.Hour)) // a month suspended
	check("resumed from suspend", []string{"permanent"}, time.Time{})
	mf.Blocks = mf.Blocks[:1]
	check("removed from the files", []string{"permanent"}, time.Time{})
	if len(lifted) != 0 {
		t.Errorf("lifted %v after the block left the files, want empty", lifted)
	}
}

// TestRatesClockStepsAndCounterResets: rates over a clock that stepped back
// (times without the monotonic reading) or did not move are zero, and the
// read is the next baseline; a source or global counter that went down
// gives the rate of what was counted since, never an underflowed uint64.
func TestRatesClockStepsAndCounterResets(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC) // no monotonic reading
	a := addr("198.18.0.1")
	talker := func(packets uint64) []bpf.Talker {
		return []bpf.Talker{{Addr: a, Packets: packets, Bytes: packets * 1000}}
	}
	stats := func(packets uint64) bpf.Stats { return bpf.Stats{Packets: packets, Bytes: packets * 1000} }
	var r rateTracker
	step := func(what string, at time.Time, packets, global uint64, want rate) {
		t.Helper()
		r.update(at, talker(packets), stats(global), nil)
		if got := r.rateOf(a); got != want {
			t.Errorf("%s: source rate %+v, want %+v", what, got, want)
		}
		if r.total != want {
			t.Errorf("%s: total rate %+v, want %+v", what, r.total, want)
		}
	}
	step("baseline", t0, 100, 100, rate{})
	step("1s later", t0.Add(time.Second), 200, 200, rate{bits: 800000, packets: 100})
	step("clock stepped back 1h", t0.Add(-time.Hour), 300, 300, rate{})
	step("clock did not move", t0.Add(-time.Hour), 400, 400, rate{})
	// Measured from the stepped-back read: 200 packets in 2s.
	step("2s after the step", t0.Add(-time.Hour+2*time.Second), 600, 600, rate{bits: 800000, packets: 100})
	// Counters reset (the source evicted and inserted again, the maps
	// rebuilt): what was counted since, over the interval.
	step("counters reset", t0.Add(-time.Hour+4*time.Second), 50, 50, rate{bits: 200000, packets: 25})
	step("a clock step of a day forward", t0.Add(23*time.Hour+4*time.Second), 86450, 86450, rate{bits: 8000, packets: 1})

	// The dashboard's event: no negative interval, no rule rates.
	prev := &Report{Time: t0, Stats: bpf.Stats{Dropped: 100, Local: 100},
		Rules: []RuleReport{{Name: "b", RuleID: 1, Matched: 100, Dropped: 100}}}
	cur := &Report{Time: t0.Add(-time.Second), Stats: bpf.Stats{Dropped: 200, Local: 200}, BitsPerSecond: 0,
		Rules: []RuleReport{{Name: "b", RuleID: 1, Matched: 200, Dropped: 200}}}
	ev := reportEvent("node-a", Config{}, prev, cur, splitRates{})
	if ev.ElapsedSeconds != 0 || ev.Rates != (EventRates{}) || ev.Rules[0].MatchedPacketsPerSecond != 0 || ev.Rules[0].DroppedPacketsPerSecond != 0 {
		t.Errorf("event over a clock stepped back: elapsed %v, rates %+v, rule %+v; want 0 and no rates", ev.ElapsedSeconds, ev.Rates, ev.Rules[0])
	}
	// Rule counters reset (a rebuild), 2s: what was counted since.
	cur.Time, cur.Rules[0].Matched, cur.Rules[0].Dropped, cur.Stats.Dropped = t0.Add(2*time.Second), 10, 4, 6
	ev = reportEvent("node-a", Config{}, prev, cur, splitRates{})
	if ev.ElapsedSeconds != 2 || ev.Rules[0].MatchedPacketsPerSecond != 5 || ev.Rules[0].DroppedPacketsPerSecond != 2 || ev.Rates.DroppedPacketsPerSecond != 3 {
		t.Errorf("event after a reset: elapsed %v, rule %+v, dropped %d/s; want 2, 5/s and 2/s matched and dropped, 3/s",
			ev.ElapsedSeconds, ev.Rules[0], ev.Rates.DroppedPacketsPerSecond)
	}
}

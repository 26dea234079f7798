package agent

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/bpf"
)

// Tests of the agent's logic that needs no kernel: rates, ranking, table
// rendering, exemptions, rule IDs and manifest loading.

func addr(s string) bpf.Addr { return bpf.AddrFrom(netip.MustParseAddr(s)) }

func TestRatesFromDeltasOverElapsedTime(t *testing.T) {
	var r rateTracker
	t0 := time.Unix(1000, 0)
	a, b := addr("198.18.0.1"), addr("2001:db8::2")
	// First read: baseline only, even for counters adopted from a run.
	r.update(t0, []bpf.Talker{{Addr: a, Packets: 100, Bytes: 100000}}, bpf.Stats{Packets: 100, Bytes: 100000}, nil)
	if r.rateOf(a) != (rate{}) || r.total != (rate{}) {
		t.Fatalf("first read gave rate %v total %v, want none", r.rateOf(a), r.total)
	}
	// 2.5 s later: a sent 50 packets, 62500 bytes; b is new with 10 packets, 1000 bytes.
	r.update(t0.Add(2500*time.Millisecond),
		[]bpf.Talker{{Addr: a, Packets: 150, Bytes: 162500}, {Addr: b, Packets: 10, Bytes: 1000}},
		bpf.Stats{Packets: 160, Bytes: 163500}, []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")})
	if got, want := r.rateOf(a), (rate{bits: 200000, packets: 20}); got != want {
		t.Errorf("rate of a %+v, want %+v", got, want)
	}
	if got, want := r.rateOf(b), (rate{bits: 3200, packets: 4}); got != want {
		t.Errorf("rate of new source b %+v, want %+v", got, want)
	}
	if got, want := r.total, (rate{bits: 203200, packets: 24}); got != want {
		t.Errorf("total %+v, want %+v", got, want)
	}
	// a is inside the internal 198.18.0.0/24, b outside.
	if got, want := r.split, (splitRates{internal: rate{bits: 200000, packets: 20}, external: rate{bits: 3200, packets: 4}}); got != want {
		t.Errorf("internal/external split %+v, want %+v", got, want)
	}
	// a was evicted and came back with fewer counts: a reset, not a negative rate.
	r.update(t0.Add(3500*time.Millisecond),
		[]bpf.Talker{{Addr: a, Packets: 5, Bytes: 500}, {Addr: b, Packets: 10, Bytes: 1000}},
		bpf.Stats{Packets: 165, Bytes: 164000}, nil)
	if got, want := r.rateOf(a), (rate{bits: 4000, packets: 5}); got != want {
		t.Errorf("rate after reset %+v, want %+v", got, want)
	}
	if got := r.rateOf(b); got != (rate{}) {
		t.Errorf("idle source rate %+v, want 0", got)
	}
	// Global counters reset (maps rebuilt).
	r.update(t0.Add(4500*time.Millisecond), nil, bpf.Stats{Packets: 3, Bytes: 300}, nil)
	if got, want := r.total, (rate{bits: 2400, packets: 3}); got != want {
		t.Errorf("total after reset %+v, want %+v", got, want)
	}
}

func TestRankByRateThenBytes(t *testing.T) {
	ts := []TalkerReport{
		{Address: netip.MustParseAddr("198.18.0.3"), Bytes: 10, BitsPerSecond: 5},
		{Address: netip.MustParseAddr("198.18.0.1"), Bytes: 900, BitsPerSecond: 0},
		{Address: netip.MustParseAddr("198.18.0.2"), Bytes: 20, BitsPerSecond: 5},
		{Address: netip.MustParseAddr("2001:db8::1"), Bytes: 900, BitsPerSecond: 0},
		{Address: netip.MustParseAddr("198.18.0.4"), Bytes: 1, BitsPerSecond: 7},
	}
	var got []string
	for _, t := range rank(ts, 4) {
		got = append(got, t.Address.String())
	}
	want := []string{"198.18.0.4", "198.18.0.2", "198.18.0.3", "198.18.0.1"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rank %v, want %v", got, want)
	}
	if n := len(rank(ts, 0)); n != 5 {
		t.Fatalf("limit 0 kept %d, want all 5", n)
	}
}

func pfx(ss ...string) []netip.Prefix {
	out, err := ParsePrefixes(ss)
	if err != nil {
		panic(err)
	}
	return out
}

func TestBuildTables(t *testing.T) {
	blocks := []Block{
		{Name: "audit-wide", RuleID: 3, Direction: DirectionSource, Mode: BlockModeAudit, CIDRs: pfx("198.18.0.0/16", "198.18.5.5")},
		{Name: "enforce", RuleID: 7, Direction: DirectionBoth, Mode: BlockModeEnforce, CIDRs: pfx("198.18.5.5/32", "::ffff:198.19.0.0/112")},
		{Name: "dst", RuleID: 2, Direction: DirectionDestination, Mode: BlockModeEnforce, CIDRs: pfx("2001:db8::/48")},
	}
	tabs, lost := buildTables(blocks, pfx("198.18.0.1", "2001:db8::1/128"))
	want := tables{
		bpf.TableSource: {
			netip.MustParsePrefix("198.18.0.0/16"): {ID: 3, Mode: bpf.ModeAudit},
			netip.MustParsePrefix("198.18.5.5/32"): {ID: 7},
			netip.MustParsePrefix("198.19.0.0/16"): {ID: 7},
		},
		bpf.TableDestination: {
			netip.MustParsePrefix("198.18.5.5/32"): {ID: 7},
			netip.MustParsePrefix("198.19.0.0/16"): {ID: 7},
			netip.MustParsePrefix("2001:db8::/48"): {ID: 2},
		},
		bpf.TableProtected: {
			netip.MustParsePrefix("198.18.0.1/32"):   {},
			netip.MustParsePrefix("2001:db8::1/128"): {},
		},
	}
	if !reflect.DeepEqual(tabs, want) {
		t.Errorf("tables\n got %v\nwant %v", tabs, want)
	}
	wantLost := []shadowed{{Block: "audit-wide", Prefix: netip.MustParsePrefix("198.18.5.5/32"), Winner: "enforce"}}
	if !reflect.DeepEqual(lost, wantLost) {
		t.Errorf("shadowed %v, want %v", lost, wantLost)
	}
}

func TestExemptions(t *testing.T) {
	protected := pfx("198.18.0.1", "198.18.0.0/30", "2001:db8::1", "198.19.0.0/16")
	got := exemptions(pfx("198.18.0.0/24", "198.19.7.7", "2001:db8:ff::/48"), protected)
	want := []string{"198.18.0.0/30", "198.18.0.1", "198.19.7.7"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("exemptions %v, want %v", got, want)
	}
}

func TestStandaloneRuleIDsStable(t *testing.T) {
	mf := func(names ...string) []string { return names }
	ids1 := idsOf(mf("a", "b", "c"))
	ids2 := idsOf(mf("c", "zz", "a"))
	if ids1["a"] != ids2["a"] || ids1["c"] != ids2["c"] {
		t.Fatalf("IDs moved when another block came and went: %v then %v", ids1, ids2)
	}
	// As many blocks as rules: every ID of 1..8 used once.
	seen := map[uint32]bool{}
	for n, id := range idsOf(mf("a", "b", "c", "d", "e", "f", "g", "h")) {
		if id == 0 || id > 8 || seen[id] {
			t.Fatalf("block %s: rule ID %d not unique in 1..8", n, id)
		}
		seen[id] = true
	}
}

// TestRuleIDsKept: IDs given in keep stay (a Kubernetes agent's, taken
// back from its status), unless out of range or claimed twice; the others
// are hashed past them.
func TestRuleIDsKept(t *testing.T) {
	fresh := assignRuleIDs([]string{"a", "b", "c"}, nil, 8)
	keep := map[string]uint32{"a": fresh["b"], "b": fresh["b"], "c": 99, "gone": fresh["c"]}
	ids := assignRuleIDs([]string{"a", "b", "c"}, keep, 8)
	if ids["a"] != fresh["b"] {
		t.Errorf("a got %d, want its kept %d", ids["a"], fresh["b"])
	}
	seen := map[uint32]bool{}
	for n, id := range ids {
		if id == 0 || id > 8 || seen[id] {
			t.Fatalf("%s: rule ID %d not unique in 1..8 (%v)", n, id, ids)
		}
		seen[id] = true
	}
	if len(ids) != 3 {
		t.Errorf("ids %v: want a, b and c only", ids)
	}
}

func idsOf(names []string) map[string]uint32 { return assignRuleIDs(names, nil, 8) }

func TestConfigValidate(t *testing.T) {
	ok := Config{Interface: "lan0"}.WithDefaults()
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Interface = "" }, "interface: must be set"},
		{func(c *Config) { c.XDPMode = "Fast" }, `xdpMode: unknown mode "Fast"`},
		{func(c *Config) { c.TopN = 101 }, "topN: 101 not in 1..100"},
		{func(c *Config) { c.ReportInterval = time.Millisecond }, "reportInterval: 1ms is under 1s"},
		{func(c *Config) {
			c.Blocks = []Block{{Name: "x", RuleID: 1, Direction: DirectionSource, Mode: BlockModeEnforce}, {Name: "y", RuleID: 1, Direction: DirectionSource, Mode: BlockModeEnforce}}
		}, `block "y": rule ID 1 already used by block "x"`},
		{func(c *Config) {
			c.Blocks = []Block{{Name: "x", RuleID: 0, Direction: DirectionSource, Mode: BlockModeEnforce}}
		}, `block "x": rule ID 0 is reserved`},
		{func(c *Config) {
			for i := range 3 {
				c.Blocks = append(c.Blocks, Block{Name: fmt.Sprint(i), RuleID: uint32(60000 + i), Direction: DirectionSource, Mode: BlockModeEnforce})
			}
		}, `blocks: 3, more than the 2 rules the datapath holds`},
	} {
		cfg := ok
		c.edit(&cfg)
		err := cfg.Validate(2)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("error %v, want prefix %q", err, c.want)
		}
	}
	if err := ok.Validate(2); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

// TestTopTalkersSelection: the heap selection gives the same top N as a full
// rank, ties broken by bytes then address.
func TestTopTalkersSelection(t *testing.T) {
	var tr rateTracker
	var talkers []bpf.Talker
	t0 := time.Unix(0, 0)
	for i := range 300 {
		talkers = append(talkers, bpf.Talker{Addr: addr(fmt.Sprintf("198.18.%d.%d", i/256, i%256)), Packets: 1, Bytes: uint64(i % 7)})
	}
	tr.update(t0, talkers, bpf.Stats{}, nil)
	for i := range talkers {
		talkers[i].Bytes += uint64((i * 37) % 11 * 100)
		talkers[i].Packets++
	}
	tr.update(t0.Add(time.Second), talkers, bpf.Stats{}, nil)
	for _, n := range []int{1, 5, 10, 100, 299} {
		full := rank(talkerReports(talkers, &tr, nil), n)
		top := topTalkers(slices.Clone(talkers), &tr, nil, n)
		merged := rankTalkers(slices.Clone(talkers), &tr, nil, n)
		if !reflect.DeepEqual(full, top) || !reflect.DeepEqual(full, merged) {
			t.Fatalf("n=%d: selection %v, merge %v, full rank %v", n, top, merged, full)
		}
	}
}

// TestReportEventRatesAndRules: the dashboard's event of a report carries
// the per-second rates of the global and per-rule counters over the real
// elapsed time, at most maxEventCIDRs of a rule's CIDRs beside their count,
// no rule rate across a rule ID change, and no rates at all for the first
// report (nothing to compare with).
func TestReportEventRatesAndRules(t *testing.T) {
	t0 := time.Unix(2000, 0)
	cidrs := make([]netip.Prefix, 10)
	for i := range cidrs {
		cidrs[i] = netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", i))
	}
	cfg := Config{ReportInterval: 2 * time.Second, Blocks: []Block{
		{Name: "scanners", RuleID: 1, Generation: 3, Mode: v1alpha1.BlockModeEnforce, CIDRs: cidrs},
		{Name: "renumbered", RuleID: 7, Generation: 1, Mode: v1alpha1.BlockModeAudit, CIDRs: cidrs[:1]},
	}}
	prev := Report{Time: t0, Stats: bpf.Stats{Local: 100, Snooped: 50, Dropped: 10, Malformed: 2, NonIP: 4},
		Rules: []RuleReport{{Name: "scanners", RuleID: 1, Matched: 10, Dropped: 10}, {Name: "renumbered", RuleID: 6, Matched: 0}}}
	cur := Report{Time: t0.Add(2 * time.Second), Interface: "lan0", Ifindex: 4, XDPMode: "native", Promiscuous: true,
		BitsPerSecond: 8000, PacketsPerSecond: 90,
		Stats:          bpf.Stats{Packets: 400, Local: 200, Snooped: 150, Dropped: 40, Malformed: 2, NonIP: 8},
		Rules:          []RuleReport{{Name: "scanners", RuleID: 1, Generation: 3, Matched: 50, Dropped: 40}, {Name: "renumbered", RuleID: 7, Generation: 1, Matched: 9}},
		TrackedSources: 3, TrackedSourcesCapacity: 65536}
	split := splitRates{internal: rate{bits: 6000, packets: 60}, external: rate{bits: 2000, packets: 30}}
	ev := reportEvent("node-a", cfg, &prev, &cur, split)

	wantRates := EventRates{BitsPerSecond: 8000, PacketsPerSecond: 90,
		InternalBitsPerSecond: 6000, InternalPacketsPerSecond: 60, ExternalBitsPerSecond: 2000, ExternalPacketsPerSecond: 30,
		LocalPacketsPerSecond: 50, SnoopedPacketsPerSecond: 50, DroppedPacketsPerSecond: 15, MalformedPacketsPerSecond: 0, NonIPPacketsPerSecond: 2}
	if ev.Rates != wantRates {
		t.Errorf("rates\n got %+v\nwant %+v", ev.Rates, wantRates)
	}
	if ev.Node != "node-a" || ev.Interface != "lan0" || ev.Ifindex != 4 || ev.ElapsedSeconds != 2 || ev.ReportIntervalSeconds != 2 || !ev.Promiscuous {
		t.Errorf("identity fields %+v", ev)
	}
	if ev.Totals.TrackedSources != 3 || ev.Totals.TrackedSourcesCapacity != 65536 || ev.Totals.Packets != 400 {
		t.Errorf("totals %+v", ev.Totals)
	}
	if len(ev.Rules) != 2 {
		t.Fatalf("rules %+v, want 2", ev.Rules)
	}
	s := ev.Rules[0]
	if s.CIDRCount != 10 || len(s.CIDRs) != maxEventCIDRs || s.CIDRs[0] != "198.18.0.0/24" ||
		s.MatchedPacketsPerSecond != 20 || s.DroppedPacketsPerSecond != 15 || s.MatchedPackets != 50 || s.DroppedPackets != 40 {
		t.Errorf("scanners rule %+v", s)
	}
	if r := ev.Rules[1]; r.MatchedPacketsPerSecond != 0 || r.MatchedPackets != 9 || r.CIDRCount != 1 {
		t.Errorf("a rule whose ID changed must have no rate across the change: %+v", r)
	}

	first := reportEvent("node-a", cfg, &Report{}, &cur, split)
	if first.Rates != (EventRates{}) || first.ElapsedSeconds != 0 || first.Rules[0].MatchedPacketsPerSecond != 0 {
		t.Errorf("first report has rates %+v / rule %+v, want none", first.Rates, first.Rules[0])
	}
}

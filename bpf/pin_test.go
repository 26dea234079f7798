package bpf_test

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/internal/frames"
	"github.com/lanmonitor/lanmonitor/internal/privileged"
)

// TestPinAndAdopt loads with a pin path, adds rules and counts, closes, and
// loads again from the same pins: rules, filter and counters are adopted,
// so the blocked source is still dropped and counters continue. Unpin then
// removes the pins and the directory.
func TestPinAndAdopt(t *testing.T) {
	privileged.Require(t)
	dir, err := os.MkdirTemp(privileged.BPFFS, "lanmonitor-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pins := filepath.Join(dir, "lab0")
	cfg := bpf.Config{MaxTrackedSources: 1024, MaxPrefixes: 1024, MaxRules: 16, PinPath: pins}

	blocked := frames.MustBuild(udp4(200))
	allowed := frames.MustBuild(udp4(201))

	first := loadForTest(t, cfg)
	if _, _, err := first.SyncPrefixes(bpf.TableSource, map[netip.Prefix]bpf.Rule{
		netip.MustParsePrefix(src4(200).String() + "/32"): {ID: 3},
		netip.MustParsePrefix("2001:db8:ff::/48"):         {ID: 4, Mode: bpf.ModeAudit},
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := first.SyncPrefixes(bpf.TableProtected, map[netip.Prefix]bpf.Rule{netip.MustParsePrefix("198.18.0.1/32"): {}}); err != nil {
		t.Fatal(err)
	}
	if v := run(t, first, blocked); v != xdpDrop {
		t.Fatalf("before restart: blocked source verdict %d", v)
	}
	run(t, first, allowed)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := loadForTest(t, cfg)
	if v := run(t, second, blocked); v != xdpDrop {
		t.Fatalf("after adopting: blocked source verdict %d, want drop", v)
	}
	if v := run(t, second, allowed); v != xdpPass {
		t.Fatalf("after adopting: allowed source verdict %d, want pass", v)
	}
	st := stats(t, second)
	if st.Packets != 4 || st.Dropped != 2 || st.Passed != 2 {
		t.Fatalf("stats after adopting %+v: want 4 packets, 2 dropped, 2 passed (counters continue)", st)
	}
	if tk := talkerMap(t, second)[src4(200).String()]; tk.Packets != 2 {
		t.Fatalf("blocked source talker %+v, want 2 packets", tk)
	}
	if rc := ruleCounters(t, second)[3]; rc != (bpf.RuleCounters{Matched: 2, Dropped: 2}) {
		t.Fatalf("rule 3 counters %+v, want 2 matched, 2 dropped", rc)
	}
	wantSrc := []bpf.PrefixRule{
		{Prefix: netip.MustParsePrefix(src4(200).String() + "/32"), Rule: bpf.Rule{ID: 3}},
		{Prefix: netip.MustParsePrefix("2001:db8:ff::/48"), Rule: bpf.Rule{ID: 4, Mode: bpf.ModeAudit}},
	}
	if got := second.Prefixes(bpf.TableSource); !equalPrefixRules(got, wantSrc) {
		t.Fatalf("adopted source table %v, want %v", got, wantSrc)
	}
	// Removing one adopted prefix touches only it.
	written, deleted, err := second.SyncPrefixes(bpf.TableSource, map[netip.Prefix]bpf.Rule{netip.MustParsePrefix("2001:db8:ff::/48"): {ID: 4, Mode: bpf.ModeAudit}})
	if err != nil || written != 0 || deleted != 1 {
		t.Fatalf("sync after adopt: written %d deleted %d err %v, want 0, 1, nil", written, deleted, err)
	}
	if v := run(t, second, blocked); v != xdpPass {
		t.Fatalf("after removing the rule: verdict %d, want pass", v)
	}

	if err := second.Unpin(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pins); !os.IsNotExist(err) {
		t.Fatalf("pin directory still there after Unpin: %v", err)
	}
}

func equalPrefixRules(a, b []bpf.PrefixRule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPrefixValidation: prefixes the tables cannot hold are refused with a
// message naming them, and nothing is written.
func TestPrefixValidation(t *testing.T) {
	d := loadForTest(t, bpf.Config{MaxPrefixes: 4, MaxRules: 2})
	for _, c := range []struct {
		prefixes map[netip.Prefix]bpf.Rule
		want     string
	}{
		{map[netip.Prefix]bpf.Rule{netip.MustParsePrefix("::ffff:198.18.0.0/120"): {ID: 1}}, "source table: prefix ::ffff:198.18.0.0/120 is IPv4-mapped IPv6: use the IPv4 form"},
		{map[netip.Prefix]bpf.Rule{netip.MustParsePrefix("198.18.0.0/24"): {ID: 0}}, "source table: prefix 198.18.0.0/24: rule ID 0 is reserved"},
		{map[netip.Prefix]bpf.Rule{
			netip.MustParsePrefix("198.18.0.1/32"): {ID: 1}, netip.MustParsePrefix("198.18.0.2/32"): {ID: 2},
			netip.MustParsePrefix("198.18.0.3/32"): {ID: 65535},
		}, "3 distinct rules in all tables exceed the capacity of 2"},
		{map[netip.Prefix]bpf.Rule{
			netip.MustParsePrefix("198.18.0.1/32"): {ID: 1}, netip.MustParsePrefix("198.18.0.2/32"): {ID: 1},
			netip.MustParsePrefix("198.18.0.3/32"): {ID: 1}, netip.MustParsePrefix("198.18.0.4/32"): {ID: 1},
			netip.MustParsePrefix("198.18.0.5/32"): {ID: 1},
		}, "5 prefixes in all tables exceed the capacity of 4"},
	} {
		_, _, err := d.SyncPrefixes(bpf.TableSource, c.prefixes)
		if err == nil || err.Error() != c.want {
			t.Errorf("error %v, want %q", err, c.want)
		}
		if got := d.Prefixes(bpf.TableSource); len(got) != 0 {
			t.Errorf("prefixes written despite the error: %v", got)
		}
	}
}

// TestRuleCountersFollowRules: a rule's counters exist while a prefix refers
// to it and go with the last one, so an ID reused later starts from zero.
func TestRuleCountersFollowRules(t *testing.T) {
	d := loadForTest(t, bpf.Config{MaxRules: 4})
	frame := frames.MustBuild(udp4(210))
	p := netip.MustParsePrefix(src4(210).String() + "/32")
	sync := func(rules map[netip.Prefix]bpf.Rule) {
		t.Helper()
		if _, _, err := d.SyncPrefixes(bpf.TableSource, rules); err != nil {
			t.Fatal(err)
		}
	}
	sync(map[netip.Prefix]bpf.Rule{p: {ID: 60001}})
	run(t, d, frame)
	run(t, d, frame)
	if got := ruleCounters(t, d); len(got) != 1 || got[60001] != (bpf.RuleCounters{Matched: 2, Dropped: 2}) {
		t.Fatalf("counters %v, want rule 60001: 2 matched, 2 dropped", got)
	}
	sync(nil)
	if got := ruleCounters(t, d); len(got) != 0 {
		t.Fatalf("counters of a rule no prefix refers to: %v", got)
	}
	sync(map[netip.Prefix]bpf.Rule{p: {ID: 60001, Mode: bpf.ModeAudit}})
	run(t, d, frame)
	if got := ruleCounters(t, d); got[60001] != (bpf.RuleCounters{Matched: 1}) {
		t.Fatalf("reused rule ID counters %v, want 1 matched from zero", got[60001])
	}
}

// TestNotPromiscuous: without LM_FLAG_PROMISCUOUS, frames for other hosts
// are passed and ignored (as a MAC filter would drop them before XDP), even
// from a blocked source; frames for this interface are counted as usual.
func TestNotPromiscuous(t *testing.T) {
	d := loadForTest(t, bpf.Config{})
	if err := d.SetPromiscuous(false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.SyncPrefixes(bpf.TableSource, map[netip.Prefix]bpf.Rule{netip.MustParsePrefix(src4(220).String() + "/32"): {ID: 1}}); err != nil {
		t.Fatal(err)
	}
	snooped := frames.MustBuild(with(udp4(220), func(s *frames.Spec) { s.DstMAC = otherMAC }))
	local := frames.MustBuild(udp4(221))
	if v := run(t, d, snooped); v != xdpPass {
		t.Fatalf("snooped frame verdict %d, want pass", v)
	}
	if v := run(t, d, local); v != xdpPass {
		t.Fatalf("local frame verdict %d, want pass", v)
	}
	st := stats(t, d)
	want := bpf.Stats{Packets: 1, Bytes: uint64(len(local)), Passed: 1, IPv4: 1, Local: 1, TalkerInserts: 1, FilteredSnooped: 1}
	if st != want {
		t.Fatalf("stats\n got %+v\nwant %+v", st, want)
	}
	if tk := talkerMap(t, d); len(tk) != 1 || tk[src4(221).String()].Packets != 1 {
		t.Fatalf("talkers %v, want only %s", tk, src4(221))
	}
	if rc := ruleCounters(t, d)[1]; rc != (bpf.RuleCounters{}) {
		t.Fatalf("rule counters %+v for an ignored frame", rc)
	}
}

// TestFilterAfterRemovals: removing prefixes recomputes the Bloom filter
// words they touched from the prefixes that remain, so keys sharing a word
// with a removed one keep matching. A small filter makes words shared.
func TestFilterAfterRemovals(t *testing.T) {
	d := loadForTest(t, bpf.Config{MaxPrefixes: 2048}) // 512 filter words
	all := map[netip.Prefix]bpf.Rule{}
	keep := map[netip.Prefix]bpf.Rule{}
	for i := range 2000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), 32)
		all[p] = bpf.Rule{ID: 1}
		if i%2 == 0 {
			keep[p] = bpf.Rule{ID: 1}
		}
	}
	if _, _, err := d.SyncPrefixes(bpf.TableSource, all); err != nil {
		t.Fatal(err)
	}
	if _, deleted, err := d.SyncPrefixes(bpf.TableSource, keep); err != nil || deleted != 1000 {
		t.Fatalf("deleted %d, err %v; want 1000", deleted, err)
	}
	for p := range all {
		_, kept := keep[p]
		want := uint32(xdpPass)
		if kept {
			want = xdpDrop
		}
		f := frames.MustBuild(with(udp4(0), func(s *frames.Spec) { s.Src = p.Addr() }))
		if got := run(t, d, f); got != want {
			t.Fatalf("%s (kept %v): verdict %d, want %d", p, kept, got, want)
		}
	}
}

// TestPinMismatch: maps pinned by another configuration or another version
// of the program are detected on load, each kind of mismatch with real
// pins: a map that does not match is replaced by a new one, never read
// with the wrong layout; maps that match are adopted with their counters;
// counters are copied over where the layouts allow; the rule maps (rules,
// filter, settings) are replaced together. Pinning the new maps makes the
// next load adopt everything.
func TestPinMismatch(t *testing.T) {
	privileged.Require(t)
	base := bpf.Config{MaxTrackedSources: 1024, MaxPrefixes: 1024, MaxRules: 16}
	rules := map[bpf.Table]map[netip.Prefix]bpf.Rule{bpf.TableSource: {netip.MustParsePrefix(src4(200).String() + "/32"): {ID: 3}}}
	blocked, allowed := frames.MustBuild(udp4(200)), frames.MustBuild(udp4(201))
	ruleUnit := []string{"lm_filter", "lm_rules", "lm_settings"}
	talkerTable := []string{"lm_free_slots", "lm_slot_next", "lm_slot_of", "lm_talker_addrs", "lm_talker_counts"}

	for _, c := range []struct {
		name string
		cfg  func(bpf.Config) bpf.Config
		// pin replaces one pin with a map of another shape (nil: none).
		pin      *ebpf.MapSpec
		replaced []string
		carried  []string
	}{
		// The talker table's maps are replaced together, its sources copied.
		{name: "talker capacity", cfg: func(c bpf.Config) bpf.Config { c.MaxTrackedSources = 2048; return c },
			replaced: talkerTable, carried: talkerTable},
		// Releases up to 0.3 pinned a per-CPU LRU hash of sources instead.
		{name: "legacy talker map", pin: &ebpf.MapSpec{Name: "lm_talkers", Type: ebpf.LRUCPUHash, KeySize: 16, ValueSize: 32, MaxEntries: 1024},
			replaced: []string{"lm_talkers"}, carried: []string{"lm_talkers"}},
		{name: "rule capacity", cfg: func(c bpf.Config) bpf.Config { c.MaxPrefixes = 512; return c },
			replaced: ruleUnit},
		{name: "rule counters value size", pin: &ebpf.MapSpec{Name: "lm_rule_stats", Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 16, MaxEntries: 16},
			replaced: []string{"lm_rule_stats"}},
		{name: "filter key size and type", pin: &ebpf.MapSpec{Name: "lm_filter", Type: ebpf.Hash, KeySize: 8, ValueSize: 8, MaxEntries: 128},
			replaced: ruleUnit},
		{name: "rule map flags", pin: &ebpf.MapSpec{Name: "lm_rules", Type: ebpf.Hash, KeySize: 20, ValueSize: 8, MaxEntries: 2048},
			replaced: ruleUnit},
		{name: "older global counters", pin: &ebpf.MapSpec{Name: "lm_global_stats", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 17 * 8, MaxEntries: 1},
			replaced: []string{"lm_global_stats"}, carried: []string{"lm_global_stats"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, err := os.MkdirTemp(privileged.BPFFS, "lanmonitor-test-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			cfg := base
			cfg.PinPath = filepath.Join(dir, "lab0")

			first := loadForTest(t, cfg)
			if _, _, err := first.SyncTables(rules); err != nil {
				t.Fatal(err)
			}
			run(t, first, blocked)
			run(t, first, allowed)
			run(t, first, allowed)
			wantStats := stats(t, first)
			first.Close()

			var oldGlobal []uint64 // per CPU, the first word (packets) of the older struct
			if c.pin != nil {
				path := filepath.Join(cfg.PinPath, c.pin.Name)
				if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
				m, err := ebpf.NewMap(c.pin)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				if c.pin.Name == "lm_talkers" {
					// The legacy map replaces the talker table, with the
					// same counts (on CPU 0): 2 frames of .201, 1 of .200.
					for _, name := range []string{"lm_slot_of", "lm_talker_counts", "lm_talker_addrs", "lm_free_slots", "lm_slot_next"} {
						if err := os.Remove(filepath.Join(cfg.PinPath, name)); err != nil {
							t.Fatal(err)
						}
					}
					cpus, _ := ebpf.PossibleCPU()
					for src, n := range map[netip.Addr]uint64{src4(201): 2, src4(200): 1} {
						per := make([][4]uint64, cpus)
						per[0] = [4]uint64{n, n * uint64(len(allowed)), n, 0}
						if err := m.Put(src.As16(), per); err != nil {
							t.Fatal(err)
						}
					}
				}
				if c.pin.Name == "lm_global_stats" {
					// An older struct lm_stats: every field up to v4_mapped
					// but it (release 0.2).
					cpus, _ := ebpf.PossibleCPU()
					per := make([][17]uint64, cpus)
					for cpu := range per {
						for w := range per[cpu] {
							per[cpu][w] = uint64(100*cpu + w + 1)
						}
						oldGlobal = append(oldGlobal, per[cpu][0])
					}
					if err := m.Put(uint32(0), per); err != nil {
						t.Fatal(err)
					}
				}
				if err := m.Pin(path); err != nil {
					t.Fatal(err)
				}
			}
			if c.cfg != nil {
				cfg = c.cfg(cfg)
			}

			second := loadForTest(t, cfg)
			if got := second.Replaced(); !slices.Equal(got, c.replaced) {
				t.Errorf("replaced %v, want %v", got, c.replaced)
			}
			if got := second.CarriedOver(); !slices.Equal(got, c.carried) {
				t.Errorf("carried over %v, want %v", got, c.carried)
			}
			replaced := func(name string) bool { return slices.Contains(c.replaced, name) }

			// The rules: adopted, or replaced and empty (the agent writes
			// them from its configuration before it attaches), never misread.
			wantVerdict, wantPrefixes := uint32(xdpDrop), 1
			if replaced("lm_rules") {
				wantVerdict, wantPrefixes = xdpPass, 0
			}
			if got := len(second.Prefixes(bpf.TableSource)); got != wantPrefixes {
				t.Errorf("%d source prefixes after load, want %d", got, wantPrefixes)
			}
			before := stats(t, second)
			if v := run(t, second, blocked); v != wantVerdict {
				t.Errorf("blocked source verdict %d, want %d", v, wantVerdict)
			}

			// The counters: adopted or copied exactly, or new and empty.
			switch {
			case c.pin != nil && c.pin.Name == "lm_global_stats":
				var sum uint64
				for _, v := range oldGlobal {
					sum += v
				}
				if before.Packets != sum || before.V4Mapped != 0 {
					t.Errorf("global counters %+v: want packets %d copied from the older layout and v4Mapped 0", before, sum)
				}
			default:
				if before != wantStats {
					t.Errorf("global counters %+v, want %+v (adopted)", before, wantStats)
				}
			}
			talkers := talkerMap(t, second)
			if talkers[src4(201).String()].Packets != 2 || talkers[src4(200).String()].Packets < 1 {
				t.Errorf("talkers %+v: want the earlier counts (2 frames of %s)", talkers, src4(201))
			}
			if !replaced("lm_rules") {
				rc := ruleCounters(t, second)
				want := uint64(1)
				if replaced("lm_rule_stats") {
					want = 0 // a new map: the rule's counters restart
				}
				if rc[3].Matched != want+1 || rc[3].Dropped != want+1 {
					t.Errorf("rule 3 counters %+v, want %d matched and dropped", rc[3], want+1)
				}
			}

			// Pinned again, everything is adopted by the next load: the
			// same counters, talkers and rules (no map missing from the
			// pins and created anew).
			if err := second.Pin(cfg.PinPath); err != nil {
				t.Fatal(err)
			}
			wantStats, wantTalkers, wantRC := stats(t, second), talkerMap(t, second), ruleCounters(t, second)
			wantRules := second.Prefixes(bpf.TableSource)
			second.Close()
			third := loadForTest(t, cfg)
			if got := third.Replaced(); got != nil {
				t.Errorf("after Pin, the next load replaced %v", got)
			}
			for _, name := range []string{"lm_slot_of", "lm_talker_counts", "lm_talker_addrs", "lm_free_slots", "lm_slot_next",
				"lm_rules", "lm_filter", "lm_rule_stats", "lm_global_stats", "lm_settings"} {
				if _, err := os.Stat(filepath.Join(cfg.PinPath, name)); err != nil {
					t.Errorf("after Pin: %v", err)
				}
			}
			if _, err := os.Stat(filepath.Join(cfg.PinPath, "lm_talkers")); !os.IsNotExist(err) {
				t.Errorf("after Pin, the legacy talker map is still pinned: %v", err)
			}
			if got := stats(t, third); got != wantStats {
				t.Errorf("global counters after the next load %+v, want %+v", got, wantStats)
			}
			if got := talkerMap(t, third); !maps.Equal(got, wantTalkers) {
				t.Errorf("talkers after the next load %+v, want %+v", got, wantTalkers)
			}
			if got := ruleCounters(t, third); !maps.Equal(got, wantRC) {
				t.Errorf("rule counters after the next load %+v, want %+v", got, wantRC)
			}
			if got := third.Prefixes(bpf.TableSource); !slices.Equal(got, wantRules) {
				t.Errorf("source prefixes after the next load %v, want %v", got, wantRules)
			}
		})
	}
}

// TestPinnedEvictionInterrupted: an agent killed between deleting a source
// from lm_slot_of and handing its slot back leaves a slot with counters
// and no owner. The next load frees it: it is not reported as a talker,
// and the next new source gets it with its own counters only.
func TestPinnedEvictionInterrupted(t *testing.T) {
	privileged.Require(t)
	dir, err := os.MkdirTemp(privileged.BPFFS, "lanmonitor-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := bpf.Config{MaxTrackedSources: 16, PinPath: filepath.Join(dir, "lab0")}
	first := loadForTest(t, cfg)
	for _, port := range []int{200, 201, 201} {
		run(t, first, frames.MustBuild(udp4(port)))
	}
	first.Close()
	// The eviction's first step, done by hand: .200 loses its entry.
	slotOf, err := ebpf.LoadPinnedMap(filepath.Join(cfg.PinPath, "lm_slot_of"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := slotOf.Delete(src4(200).As16()); err != nil {
		t.Fatal(err)
	}
	slotOf.Close()

	second := loadForTest(t, cfg)
	got := talkerMap(t, second)
	if len(got) != 1 || got[src4(201).String()].Packets != 2 {
		t.Fatalf("talkers after the load %+v: want %s alone with 2 packets", got, src4(201))
	}
	// .202 is new: it takes the freed slot (slot 0), zeroed; .200 comes
	// back with a slot of its own.
	run(t, second, frames.MustBuild(udp4(202)))
	run(t, second, frames.MustBuild(udp4(200)))
	got = talkerMap(t, second)
	frameLen := uint64(len(frames.MustBuild(udp4(202))))
	for src, packets := range map[string]uint64{src4(200).String(): 1, src4(201).String(): 2, src4(202).String(): 1} {
		if tk := got[src]; tk.Packets != packets || tk.Bytes != packets*frameLen {
			t.Errorf("talker %s %+v: want %d packets of %d bytes", src, tk, packets, frameLen)
		}
	}
	if len(got) != 3 {
		t.Errorf("%d talkers, want 3: %+v", len(got), got)
	}
	if st := stats(t, second); st.TalkerInserts != 4 || st.TalkersFull != 0 {
		t.Errorf("stats %+v: want 4 inserts, 0 full", st)
	}
}

// TestCarryWindow: the legacy talker map of releases up to 0.3 is copied
// at Load, and what the old program counts into it until the interface
// runs the new one is added at Pin, a source first seen in that window
// included: the counts continue exactly.
func TestCarryWindow(t *testing.T) {
	privileged.Require(t)
	dir, err := os.MkdirTemp(privileged.BPFFS, "lanmonitor-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := bpf.Config{MaxTrackedSources: 64, PinPath: filepath.Join(dir, "lab0")}
	if err := os.MkdirAll(cfg.PinPath, 0o700); err != nil {
		t.Fatal(err)
	}
	legacy, err := ebpf.NewMap(&ebpf.MapSpec{Name: "lm_talkers", Type: ebpf.LRUCPUHash, KeySize: 16, ValueSize: 32, MaxEntries: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer legacy.Close()
	if err := legacy.Pin(filepath.Join(cfg.PinPath, "lm_talkers")); err != nil {
		t.Fatal(err)
	}
	cpus, _ := ebpf.PossibleCPU()
	frameLen := uint64(len(frames.MustBuild(udp4(201))))
	put := func(src netip.Addr, perCPU ...uint64) {
		t.Helper()
		per := make([][4]uint64, cpus)
		for cpu, n := range perCPU {
			per[cpu%cpus][0] += n
			per[cpu%cpus][1] += n * frameLen
			per[cpu%cpus][2] += n
		}
		if err := legacy.Put(src.As16(), per); err != nil {
			t.Fatal(err)
		}
	}
	put(src4(201), 2, 1)
	d := loadForTest(t, cfg)
	if got := d.Replaced(); !slices.Equal(got, []string{"lm_talkers"}) {
		t.Fatalf("replaced %v, want [lm_talkers]", got)
	}
	// The old program counts on: 2 more frames of .201, 3 of .202 (new).
	put(src4(201), 3, 2)
	put(src4(202), 3)
	run(t, d, frames.MustBuild(udp4(201)))
	if got := talkerMap(t, d)[src4(201).String()].Packets; got != 4 {
		t.Fatalf(".201 before Pin: %d packets, want the 3 copied and 1 counted", got)
	}
	if err := d.Pin(cfg.PinPath); err != nil {
		t.Fatal(err)
	}
	got := talkerMap(t, d)
	for src, packets := range map[string]uint64{src4(201).String(): 6, src4(202).String(): 3} {
		if tk := got[src]; tk.Packets != packets || tk.Bytes != packets*frameLen || tk.LocalPackets != packets {
			t.Errorf("talker %s %+v: want %d local packets of %d bytes", src, tk, packets, frameLen)
		}
	}
	if len(got) != 2 {
		t.Errorf("%d talkers, want 2: %+v", len(got), got)
	}
	if _, err := os.Stat(filepath.Join(cfg.PinPath, "lm_talkers")); !os.IsNotExist(err) {
		t.Errorf("the legacy map is still pinned after Pin: %v", err)
	}
}

// TestLegacyPinBesideTable: a matching talker table and the legacy
// lm_talkers pinned side by side. Pinned after the legacy map, the table
// was in force (an upgrade killed in Pin before it removed the legacy pin):
// it is adopted and the stale legacy map ignored. Pinned before it, the
// legacy map was in force (a rollback to 0.3, which knows only lm_talkers):
// the legacy map is carried and the stale table replaced.
func TestLegacyPinBesideTable(t *testing.T) {
	privileged.Require(t)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	frameLen := uint64(len(frames.MustBuild(udp4(201))))
	for _, tc := range []struct {
		name        string
		legacyAge   time.Duration // how long before the table the legacy map was pinned
		wantPackets uint64        // .201 after one more frame
		wantReplace bool
	}{
		{name: "upgrade killed in Pin", legacyAge: time.Hour, wantPackets: 2 + 1},
		{name: "rollback to 0.3", legacyAge: -time.Hour, wantPackets: 100 + 1, wantReplace: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp(privileged.BPFFS, "lanmonitor-test-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			cfg := bpf.Config{MaxTrackedSources: 64, PinPath: filepath.Join(dir, "lab0")}
			first, err := bpf.Load(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := first.SetInterfaceMAC(ourMAC); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				run(t, first, frames.MustBuild(udp4(201)))
			}
			if err := first.Pin(cfg.PinPath); err != nil {
				t.Fatal(err)
			}
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}
			legacy, err := ebpf.NewMap(&ebpf.MapSpec{Name: "lm_talkers", Type: ebpf.LRUCPUHash, KeySize: 16, ValueSize: 32, MaxEntries: 64})
			if err != nil {
				t.Fatal(err)
			}
			defer legacy.Close()
			per := make([][4]uint64, cpus)
			per[0] = [4]uint64{100, 100 * frameLen, 100, 0}
			if err := legacy.Put(src4(201).As16(), per); err != nil {
				t.Fatal(err)
			}
			legacyPin := filepath.Join(cfg.PinPath, "lm_talkers")
			if err := legacy.Pin(legacyPin); err != nil {
				t.Fatal(err)
			}
			table, err := os.Stat(filepath.Join(cfg.PinPath, "lm_slot_of"))
			if err != nil {
				t.Fatal(err)
			}
			at := table.ModTime().Add(-tc.legacyAge)
			if err := os.Chtimes(legacyPin, at, at); err != nil {
				t.Fatal(err)
			}

			d := loadForTest(t, cfg)
			if got := slices.Contains(d.Replaced(), "lm_talkers"); got != tc.wantReplace {
				t.Errorf("replaced %v: lm_talkers replaced %v, want %v", d.Replaced(), got, tc.wantReplace)
			}
			run(t, d, frames.MustBuild(udp4(201)))
			if err := d.Pin(cfg.PinPath); err != nil {
				t.Fatal(err)
			}
			got := talkerMap(t, d)
			if tk := got[src4(201).String()]; tk.Packets != tc.wantPackets || tk.Bytes != tc.wantPackets*frameLen {
				t.Errorf(".201 %+v: want %d packets of %d bytes", tk, tc.wantPackets, frameLen)
			}
			if len(got) != 1 {
				t.Errorf("%d talkers, want 1: %+v", len(got), got)
			}
			if _, err := os.Stat(legacyPin); !os.IsNotExist(err) {
				t.Errorf("the legacy map is still pinned after Pin: %v", err)
			}
		})
	}
}

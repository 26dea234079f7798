package bpf_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

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

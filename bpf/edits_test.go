package bpf_test

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/internal/frames"
)

// editStep is one configuration of the three tables and the verdict the
// program must give each probe under it ('D' XDP_DROP, 'P' XDP_PASS, in
// the order of editProbes).
type editStep struct {
	name   string
	tables map[bpf.Table]map[netip.Prefix]bpf.Rule
	want   string
}

// editProbes are the frames judged while the tables change.
var editProbes = []struct{ src, dst string }{
	{"198.18.5.7", "198.18.9.9"},
	{"198.18.5.99", "198.18.9.9"},
	{"198.18.200.1", "198.18.100.1"},
	{"2001:db8::7", "2001:db8::1"},
	{"::ffff:198.18.5.7", "2001:db8::1"}, // an IPv6 frame from an IPv4-mapped source: judged as 198.18.5.7
}

func tbl(entries ...any) map[netip.Prefix]bpf.Rule {
	m := map[netip.Prefix]bpf.Rule{}
	for i := 0; i < len(entries); i += 2 {
		m[netip.MustParsePrefix(entries[i].(string))] = entries[i+1].(bpf.Rule)
	}
	return m
}

var (
	enf = func(id uint32) bpf.Rule { return bpf.Rule{ID: id, Mode: bpf.ModeEnforce} }
	aud = func(id uint32) bpf.Rule { return bpf.Rule{ID: id, Mode: bpf.ModeAudit} }
	pro = bpf.Rule{}
)

// editSteps: each step is one edit of the one before (the last wraps to
// the first), covering the edits of an IPBlock under traffic: a shorter
// prefix added, the longer one removed, the mode changed both ways, a
// longer Audit prefix shadowing an Enforce one, a block moved from the
// source table to the destination table, protection added while the
// block goes and the reverse.
var editSteps = []editStep{
	{"a /32", map[bpf.Table]map[netip.Prefix]bpf.Rule{bpf.TableSource: tbl("198.18.5.7/32", enf(1))}, "DPPPD"},
	{"a shorter /24 and an IPv6 /32 added", map[bpf.Table]map[netip.Prefix]bpf.Rule{
		bpf.TableSource: tbl("198.18.5.7/32", enf(1), "198.18.5.0/24", enf(2), "2001:db8::/32", enf(5))}, "DDPDD"},
	{"the longer /32 removed", map[bpf.Table]map[netip.Prefix]bpf.Rule{
		bpf.TableSource: tbl("198.18.5.0/24", enf(2), "2001:db8::/32", enf(5))}, "DDPDD"},
	{"mode to Audit, the IPv6 /32 replaced by a /128", map[bpf.Table]map[netip.Prefix]bpf.Rule{
		bpf.TableSource: tbl("198.18.5.0/24", aud(2), "2001:db8::7/128", enf(5))}, "PPPDP"},
	{"mode back to Enforce under a longer Audit /32", map[bpf.Table]map[netip.Prefix]bpf.Rule{
		bpf.TableSource: tbl("198.18.5.0/24", enf(2), "198.18.5.7/32", aud(3), "2001:db8::7/128", aud(5))}, "PDPPP"},
	{"all replaced by a /16", map[bpf.Table]map[netip.Prefix]bpf.Rule{
		bpf.TableSource: tbl("198.18.0.0/16", enf(2))}, "DDDPD"},
	{"moved to the destination table", map[bpf.Table]map[netip.Prefix]bpf.Rule{
		bpf.TableSource:      tbl(),
		bpf.TableDestination: tbl("198.18.9.0/24", enf(4), "2001:db8::1/128", enf(5))}, "DDPDD"},
	{"blocks gone, the source protected", map[bpf.Table]map[netip.Prefix]bpf.Rule{
		bpf.TableDestination: tbl(), bpf.TableProtected: tbl("198.18.5.7/32", pro)}, "PPPPP"},
	{"protection gone, the source blocked", map[bpf.Table]map[netip.Prefix]bpf.Rule{
		bpf.TableProtected: tbl(), bpf.TableSource: tbl("198.18.5.7/32", enf(1))}, "DPPPD"},
	{"protected and blocked", map[bpf.Table]map[netip.Prefix]bpf.Rule{
		bpf.TableProtected: tbl("198.18.5.7/32", pro), bpf.TableSource: tbl("198.18.5.7/32", enf(1))}, "PPPPP"},
	{"protection and block both gone", map[bpf.Table]map[netip.Prefix]bpf.Rule{
		bpf.TableProtected: tbl(), bpf.TableSource: tbl()}, "PPPPP"},
}

func verdictLetter(v uint32) byte {
	switch v {
	case xdpDrop:
		return 'D'
	case xdpPass:
		return 'P'
	}
	return '?'
}

// TestEditsUnderTraffic: two CPUs run the program on the probes without
// pause while the tables go through editSteps several times. Each run reads
// the step counter before and after: a run within one configuration must
// get its verdict exactly, and a run across an edit must get the verdict
// of the old or of the new configuration; when both agree (a frame both
// block, or both pass) there is no other answer. The tables change all at
// once (double-buffered generations), so no mix of old and new entries,
// filter words or length bits is ever seen.
func TestEditsUnderTraffic(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs to run the program while the tables change")
	}
	// A small filter, so that the Bloom words are shared between keys.
	d := loadForTest(t, bpf.Config{MaxPrefixes: 64, MaxRules: 16})
	frameOf := make([][]byte, len(editProbes))
	for i, p := range editProbes {
		frameOf[i] = frames.MustBuild(with(udp4(0), func(s *frames.Spec) {
			s.Src, s.Dst = netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
		}))
	}
	// A stable check of every step first: the expectations themselves.
	apply := func(s editStep) {
		t.Helper()
		if _, _, err := d.SyncTables(s.tables); err != nil {
			t.Fatalf("step %q: %v", s.name, err)
		}
	}
	for _, s := range editSteps {
		apply(s)
		var got strings.Builder
		for i := range editProbes {
			got.WriteByte(verdictLetter(run(t, d, frameOf[i])))
		}
		if got.String() != s.want {
			t.Fatalf("step %q: verdicts %s, want %s (probes %v)", s.name, got.String(), s.want, editProbes)
		}
	}
	apply(editSteps[0])

	// phase 2i: step i in force; 2i+1: the edit from step i to i+1 under way.
	var phase atomic.Int64
	const cycles = 40
	want := func(p int64) string { return editSteps[(p/2)%int64(len(editSteps))].want }
	var (
		stop      atomic.Bool
		wg        sync.WaitGroup
		mu        sync.Mutex
		failures  []string
		runs      [2]int
		crossings [2]int // runs during an edit whose two sides agree
	)
	for cpu := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := onCPU(cpu, func() error {
				out := make([]byte, 512)
				for i := 0; !stop.Load(); i++ {
					probe := i % len(editProbes)
					p0 := phase.Load()
					ret, err := d.Program().Run(&ebpf.RunOptions{Data: frameOf[probe], DataOut: out})
					p1 := phase.Load()
					if err != nil {
						return err
					}
					got := verdictLetter(ret)
					// Steps that may have been in force during the run.
					allowed := map[byte]bool{}
					for p := p0 / 2 * 2; p <= (p1+1)/2*2; p += 2 {
						allowed[want(p)[probe]] = true
					}
					runs[cpu]++
					if (p0 != p1 || p0%2 == 1) && len(allowed) == 1 {
						crossings[cpu]++
					}
					if !allowed[got] {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("probe %s -> %s: %c during phases %d..%d (steps %q..%q)", editProbes[probe].src,
							editProbes[probe].dst, got, p0, p1, editSteps[(p0/2)%int64(len(editSteps))].name, editSteps[((p1+1)/2)%int64(len(editSteps))].name))
						mu.Unlock()
					}
				}
				return nil
			})
			if err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
			}
		}()
	}
	for i := 1; i <= cycles*len(editSteps); i++ {
		phase.Add(1) // the edit starts
		if _, _, err := d.SyncTables(editSteps[i%len(editSteps)].tables); err != nil {
			t.Errorf("edit %d: %v", i, err)
			break
		}
		phase.Add(1) // the edit is done
	}
	stop.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d runs got a verdict of neither configuration, for example:\n%s", len(failures), strings.Join(failures[:min(10, len(failures))], "\n"))
	}
	t.Logf("%d edits; %d runs, %d of them during an edit both sides of which agree", cycles*len(editSteps), runs[0]+runs[1], crossings[0]+crossings[1])
	if crossings[0]+crossings[1] < 100 {
		t.Fatalf("only %d runs during an edit: the test did not exercise the edits", crossings[0]+crossings[1])
	}
}

// TestV4MappedAddresses: an IPv6 frame whose source or destination is
// IPv4-mapped (::ffff:a.b.c.d) is matched against the IPv4 prefixes (it
// cannot dodge an IPv4 block), its source is not counted as a talker (it
// would add to the IPv4 host's counters), and it counts as V4Mapped.
func TestV4MappedAddresses(t *testing.T) {
	d := loadForTest(t, bpf.Config{})
	syncRules(t, d, []rule{
		{bpf.TableSource, "198.18.1.50/32", 1, bpf.ModeEnforce},
		{bpf.TableDestination, "198.18.9.9/32", 2, bpf.ModeEnforce},
		{bpf.TableProtected, "198.18.1.60/32", 0, bpf.ModeEnforce},
		{bpf.TableSource, "198.18.1.0/24", 3, bpf.ModeAudit},
	})
	frame := func(src, dst string) []byte {
		return frames.MustBuild(with(udp6(0), func(s *frames.Spec) { s.Src, s.Dst = netip.MustParseAddr(src), netip.MustParseAddr(dst) }))
	}
	var bytes uint64
	for _, c := range []struct {
		frame   []byte
		verdict uint32
	}{
		{frame("::ffff:198.18.1.50", "2001:db8::fe"), xdpDrop}, // the IPv4 block applies
		{frame("::ffff:198.18.1.51", "2001:db8::fe"), xdpPass}, // only the /24 Audit rule
		{frame("::ffff:198.18.1.60", "2001:db8::fe"), xdpPass}, // protected as IPv4: Audit match exempted
		{frame("2001:db8::7", "::ffff:198.18.9.9"), xdpDrop},   // the IPv4 destination block applies
		{frames.MustBuild(with(udp4(0), func(s *frames.Spec) { s.Src = netip.MustParseAddr("198.18.1.51") })), xdpPass},
	} {
		bytes += uint64(len(c.frame))
		if v := run(t, d, c.frame); v != c.verdict {
			t.Errorf("frame %x: verdict %d, want %d", c.frame[:14], v, c.verdict)
		}
	}
	st := stats(t, d)
	want := bpf.Stats{Packets: 5, Bytes: bytes, Passed: 3, Dropped: 2, IPv4: 1, IPv6: 4, Local: 5, Exempted: 1, TalkerInserts: 2, V4Mapped: 4}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	talkers := talkerMap(t, d)
	if len(talkers) != 2 || talkers["198.18.1.51"].Packets != 1 || talkers["2001:db8::7"].Packets != 1 {
		t.Errorf("talkers %+v: want 198.18.1.51 with its one IPv4 frame and 2001:db8::7, nothing for the v4-mapped sources", talkers)
	}
	got := ruleCounters(t, d)
	wantRC := map[uint32]bpf.RuleCounters{1: rc(1, 1, 0), 2: rc(1, 1, 0), 3: rc(3, 0, 1)}
	for id, w := range wantRC {
		if got[id] != w {
			t.Errorf("rule %d counters %+v, want %+v", id, got[id], w)
		}
	}
}

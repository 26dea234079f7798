package bpf_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/google/gopacket/layers"

	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/internal/frames"
	"github.com/lanmonitor/lanmonitor/internal/privileged"
)

// XDP verdicts (linux/bpf.h).
const (
	xdpAborted = 0
	xdpDrop    = 1
	xdpPass    = 2
)

// ourMAC is the MAC the tests give the "interface": frames to it are local.
var ourMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}

var otherMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x99}

func loadForTest(t testing.TB, cfg bpf.Config) *bpf.Datapath {
	t.Helper()
	privileged.Require(t)
	d, err := bpf.Load(cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if err := d.SetInterfaceMAC(ourMAC); err != nil {
		t.Fatal(err)
	}
	if err := d.SetPromiscuous(true); err != nil {
		t.Fatal(err)
	}
	return d
}

// run sends one frame through the program with BPF_PROG_TEST_RUN.
func run(t testing.TB, d *bpf.Datapath, frame []byte) uint32 {
	t.Helper()
	return runProg(t, d.Program(), frame)
}

func runProg(t testing.TB, prog *ebpf.Program, frame []byte) uint32 {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)})
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret
}

func talkerMap(t testing.TB, d *bpf.Datapath) map[string]bpf.Talker {
	t.Helper()
	ts, err := d.Talkers()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bpf.Talker{}
	for _, tk := range ts {
		m[tk.Addr.String()] = tk
	}
	return m
}

func stats(t testing.TB, d *bpf.Datapath) bpf.Stats {
	t.Helper()
	s, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ruleCounters(t testing.TB, d *bpf.Datapath) map[uint32]bpf.RuleCounters {
	t.Helper()
	rc, err := d.RuleCounters()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// rule is one blocklist or protected entry of a test case.
type rule struct {
	table  bpf.Table
	prefix string
	id     uint32
	mode   bpf.Mode
}

// syncRules makes the three tables hold exactly rules.
func syncRules(t testing.TB, d *bpf.Datapath, rules []rule) {
	t.Helper()
	want := map[bpf.Table]map[netip.Prefix]bpf.Rule{bpf.TableSource: {}, bpf.TableDestination: {}, bpf.TableProtected: {}}
	for _, r := range rules {
		want[r.table][netip.MustParsePrefix(r.prefix)] = bpf.Rule{ID: r.id, Mode: r.mode}
	}
	if _, _, err := d.SyncTables(want); err != nil {
		t.Fatalf("sync %v: %v", rules, err)
	}
}

func statsDelta(after, before bpf.Stats) bpf.Stats {
	return bpf.Stats{
		Packets: after.Packets - before.Packets, Bytes: after.Bytes - before.Bytes,
		Passed: after.Passed - before.Passed, Dropped: after.Dropped - before.Dropped,
		Malformed: after.Malformed - before.Malformed, NonIP: after.NonIP - before.NonIP,
		IPv4: after.IPv4 - before.IPv4, IPv6: after.IPv6 - before.IPv6,
		Fragments: after.Fragments - before.Fragments, VLANTagged: after.VLANTagged - before.VLANTagged,
		Local: after.Local - before.Local, Snooped: after.Snooped - before.Snooped,
		Exempted: after.Exempted - before.Exempted, TalkerInserts: after.TalkerInserts - before.TalkerInserts,
		TalkerInsertErrors: after.TalkerInsertErrors - before.TalkerInsertErrors, SamplesLost: after.SamplesLost - before.SamplesLost,
		FilteredSnooped: after.FilteredSnooped - before.FilteredSnooped,
	}
}

// Addresses used by the table; every case sends from its own source so that
// each creates exactly one talker (or none).
var (
	dst4 = netip.MustParseAddr("198.18.0.254")
	dst6 = netip.MustParseAddr("2001:db8::fe")
)

func src4(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}) }
func src6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 14: byte(i >> 8), 15: byte(i)})
}

// kind of result a case expects; the exact stats delta follows from it.
type kind int

const (
	ipPacket kind = iota
	malformed
	nonIP
)

type tcase struct {
	name    string
	spec    frames.Spec
	edit    func([]byte) []byte // breaks the built frame
	rules   []rule
	verdict uint32
	kind    kind
	// extra global counter deltas beyond those implied by kind/verdict.
	fragment, tagged, exempted bool
	// talker is the expected new talker's address ("" = spec.Src).
	talker string
	// rulesDelta are the expected per-rule counter deltas.
	rulesDelta map[uint32]bpf.RuleCounters
	// noPorts: the sample carries no ports (non-first fragment, or an
	// extension-header chain longer than the walk, whose protocol is then
	// sampleProto).
	noPorts     bool
	sampleProto layers.IPProtocol
}

func udp4(i int) frames.Spec {
	return frames.Spec{DstMAC: ourMAC, Src: src4(i), Dst: dst4, Protocol: layers.IPProtocolUDP, SrcPort: 5353, DstPort: 53, Payload: 22}
}
func udp6(i int) frames.Spec {
	return frames.Spec{DstMAC: ourMAC, Src: src6(i), Dst: dst6, Protocol: layers.IPProtocolUDP, SrcPort: 5353, DstPort: 53, Payload: 22}
}
func tcp4(i int) frames.Spec {
	s := udp4(i)
	s.Protocol, s.SrcPort, s.DstPort = layers.IPProtocolTCP, 40000, 443
	return s
}
func tcp6(i int) frames.Spec {
	s := udp6(i)
	s.Protocol, s.SrcPort, s.DstPort = layers.IPProtocolTCP, 40000, 443
	return s
}
func with(s frames.Spec, f func(*frames.Spec)) frames.Spec { f(&s); return s }

// rc builds a RuleCounters delta.
func rc(matched, dropped, exempted uint64) bpf.RuleCounters {
	return bpf.RuleCounters{Matched: matched, Dropped: dropped, Exempted: exempted}
}

// ipv4Header returns the offset of the IPv4/IPv6 header in an untagged frame.
const l3 = 14

func cases() []tcase {
	n := 0
	next := func() int { n++; return n }
	blockSrc := func(prefix string, id uint32) rule { return rule{bpf.TableSource, prefix, id, bpf.ModeEnforce} }

	var cs []tcase
	add := func(c ...tcase) { cs = append(cs, c...) }

	// Plain TCP, UDP, ICMP over both families.
	add(
		tcase{name: "ipv4 tcp", spec: tcp4(next()), verdict: xdpPass},
		tcase{name: "ipv4 udp", spec: udp4(next()), verdict: xdpPass},
		tcase{name: "ipv4 icmp", spec: with(udp4(next()), func(s *frames.Spec) { s.Protocol = layers.IPProtocolICMPv4 }), verdict: xdpPass},
		tcase{name: "ipv6 tcp", spec: tcp6(next()), verdict: xdpPass},
		tcase{name: "ipv6 udp", spec: udp6(next()), verdict: xdpPass},
		tcase{name: "ipv6 icmpv6", spec: with(udp6(next()), func(s *frames.Spec) { s.Protocol = layers.IPProtocolICMPv6 }), verdict: xdpPass},
	)

	// VLAN tags: one, two (QinQ), three (non-IP, documented: only two are parsed).
	dot1q := []layers.EthernetType{layers.EthernetTypeDot1Q}
	qinq := []layers.EthernetType{layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q}
	three := []layers.EthernetType{layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q, layers.EthernetTypeDot1Q}
	for _, fam := range []struct {
		name string
		spec func(int) frames.Spec
	}{{"ipv4", udp4}, {"ipv6", udp6}} {
		add(
			tcase{name: fam.name + " one vlan tag", spec: with(fam.spec(next()), func(s *frames.Spec) { s.Tags = dot1q }), verdict: xdpPass, tagged: true},
			tcase{name: fam.name + " qinq", spec: with(fam.spec(next()), func(s *frames.Spec) { s.Tags = qinq }), verdict: xdpPass, tagged: true},
			tcase{name: fam.name + " three tags is non-ip", spec: with(fam.spec(next()), func(s *frames.Spec) { s.Tags = three }), verdict: xdpPass, kind: nonIP, tagged: true},
		)
	}
	// A blocked source behind QinQ is still dropped.
	{
		i := next()
		add(tcase{name: "ipv4 qinq blocked", spec: with(udp4(i), func(s *frames.Spec) { s.Tags = qinq }), rules: []rule{blockSrc(src4(i).String()+"/32", 7)},
			verdict: xdpDrop, tagged: true, rulesDelta: map[uint32]bpf.RuleCounters{7: rc(1, 1, 0)}})
	}

	// IPv4 options: ports are read after them (the flow sample of each case
	// carries the ports found).
	shortOpt := []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}                    // router alert, RFC 2113
	fullOpt := []layers.IPv4Option{{OptionType: 7, OptionLength: 39, OptionData: make([]byte, 37)}, {OptionType: 0}} // record route + EOL = 40 bytes
	add(
		tcase{name: "ipv4 short option tcp", spec: with(tcp4(next()), func(s *frames.Spec) { s.IPv4Options = shortOpt }), verdict: xdpPass},
		tcase{name: "ipv4 40-byte options udp", spec: with(udp4(next()), func(s *frames.Spec) { s.IPv4Options = fullOpt; s.Payload = 0 }), verdict: xdpPass},
		// With 40 bytes of options and a TCP header that only fits when
		// the options are skipped correctly, a cut after the options but
		// before the end of the TCP header must be malformed.
		tcase{name: "ipv4 40-byte options tcp cut", spec: with(tcp4(next()), func(s *frames.Spec) { s.IPv4Options = fullOpt; s.Payload = 0 }),
			edit: func(b []byte) []byte { b = b[:l3+60+10]; setTotLen(b, 60+10); return b }, verdict: xdpPass, kind: malformed},
	)

	// Malformed IPv4: IHL 0..4, header cut short, a few bytes after the
	// ethertype, total length lying either way. Blocked sources do not
	// turn these into drops: the stack drops them.
	for ihl := 0; ihl < 5; ihl++ {
		i := next()
		add(tcase{name: fmt.Sprintf("ipv4 ihl %d", ihl), spec: udp4(i), rules: []rule{blockSrc(src4(i).String()+"/32", 9)},
			edit: func(b []byte) []byte { b[l3] = 0x40 | byte(ihl); return b }, verdict: xdpPass, kind: malformed})
	}
	add(
		tcase{name: "ipv4 header cut short", spec: udp4(next()), edit: func(b []byte) []byte { return b[:l3+12] }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv4 ethertype then 3 bytes", spec: udp4(next()), edit: func(b []byte) []byte { return b[:l3+3] }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv4 total length past frame", spec: udp4(next()), edit: func(b []byte) []byte { setTotLen(b, len(b)-l3+1); return b }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv4 total length below header", spec: udp4(next()), edit: func(b []byte) []byte { setTotLen(b, 19); return b }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv4 options past frame", spec: with(udp4(next()), func(s *frames.Spec) { s.Payload = 0 }), edit: func(b []byte) []byte { b[l3] = 0x4f; return b[:l3+40] }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv4 udp header cut", spec: udp4(next()), edit: func(b []byte) []byte { b = b[:l3+20+4]; setTotLen(b, 24); return b }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv4 version 6 in ipv4 ethertype", spec: udp4(next()), edit: func(b []byte) []byte { b[l3] = 0x65; return b }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv4 ethernet padding after total length", spec: udp4(next()), edit: func(b []byte) []byte { return append(b, make([]byte, 6)...) }, verdict: xdpPass},
		tcase{name: "ipv4 gre not parsed", spec: with(udp4(next()), func(s *frames.Spec) { s.Protocol = layers.IPProtocolGRE; s.Payload = 2 }), verdict: xdpPass},
	)

	// Malformed IPv6.
	add(
		tcase{name: "ipv6 header cut short", spec: udp6(next()), edit: func(b []byte) []byte { return b[:l3+30] }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv6 ethertype then 3 bytes", spec: udp6(next()), edit: func(b []byte) []byte { return b[:l3+3] }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv6 payload length past frame", spec: udp6(next()), edit: func(b []byte) []byte { setPayloadLen(b, len(b)-l3-40+1); return b }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv6 tcp header cut", spec: tcp6(next()), edit: func(b []byte) []byte { b = b[:l3+40+12]; setPayloadLen(b, 12); return b }, verdict: xdpPass, kind: malformed},
	)

	// IPv6 extension headers.
	chain := []frames.Ext{{Type: frames.ExtHopByHop, Len: 8}, {Type: frames.ExtDestination, Len: 16}, {Type: frames.ExtRouting, Len: 24}, {Type: frames.ExtFragment}}
	add(
		tcase{name: "ipv6 hbh dst routing frag(first) tcp", spec: with(tcp6(next()), func(s *frames.Spec) { s.IPv6Ext = chain }), verdict: xdpPass, fragment: true},
		tcase{name: "ipv6 hbh udp", spec: with(udp6(next()), func(s *frames.Spec) { s.IPv6Ext = chain[:1] }), verdict: xdpPass},
		tcase{name: "ipv6 chain past frame end", spec: with(udp6(next()), func(s *frames.Spec) { s.IPv6Ext = []frames.Ext{{Type: frames.ExtHopByHop, Len: 8}} }),
			edit: func(b []byte) []byte { b[l3+40+1] = 200; return b }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv6 chain past payload length", spec: with(udp6(next()), func(s *frames.Spec) { s.IPv6Ext = []frames.Ext{{Type: frames.ExtHopByHop, Len: 8}}; s.Payload = 0 }),
			edit: func(b []byte) []byte { setPayloadLen(b, 4); return b }, verdict: xdpPass, kind: malformed},
		tcase{name: "ipv6 gre not walked", spec: with(udp6(next()), func(s *frames.Spec) { s.Protocol = layers.IPProtocolGRE; s.Payload = 4 }), verdict: xdpPass},
	)
	{
		// Nine destination-options headers: more than the walk takes. Not
		// malformed: still counted, and still blocked.
		i := next()
		var nine []frames.Ext
		for range 9 {
			nine = append(nine, frames.Ext{Type: frames.ExtDestination, Len: 8})
		}
		add(tcase{name: "ipv6 chain longer than the walk still blocked", spec: with(udp6(i), func(s *frames.Spec) { s.IPv6Ext = nine }),
			rules: []rule{blockSrc(src6(i).String()+"/128", 11)}, verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{11: rc(1, 1, 0)},
			noPorts: true, sampleProto: frames.ExtDestination})
	}

	// Fragments: first, middle, last, tiny non-first; and a blocked source
	// dropped for every one of them.
	type frag struct {
		name string
		off  uint16
		more bool
	}
	fragments := []frag{{"first", 0, true}, {"middle", 185, true}, {"last", 370, false}, {"tiny non-first", 1, false}}
	for _, f := range fragments {
		add(tcase{name: "ipv4 fragment " + f.name, spec: with(udp4(next()), func(s *frames.Spec) {
			s.FragOffset, s.MoreFragments = f.off, f.more
			if f.off == 1 {
				s.Payload = 8
			}
		}), verdict: xdpPass, fragment: true, noPorts: f.off != 0})
		add(tcase{name: "ipv6 fragment " + f.name, spec: with(udp6(next()), func(s *frames.Spec) {
			s.IPv6Ext = []frames.Ext{{Type: frames.ExtFragment, FragOffset: f.off, More: f.more}}
			if f.off == 1 {
				s.Payload = 8
			}
		}), verdict: xdpPass, fragment: true, noPorts: f.off != 0})
	}
	for _, f := range fragments {
		i := next()
		add(tcase{name: "ipv4 blocked fragment " + f.name, spec: with(udp4(i), func(s *frames.Spec) { s.FragOffset, s.MoreFragments = f.off, f.more }),
			rules: []rule{blockSrc("198.18.1.0/24", 12)}, verdict: xdpDrop, fragment: true, noPorts: f.off != 0, rulesDelta: map[uint32]bpf.RuleCounters{12: rc(1, 1, 0)}})
		i = next()
		add(tcase{name: "ipv6 blocked fragment " + f.name, spec: with(udp6(i), func(s *frames.Spec) {
			s.IPv6Ext = []frames.Ext{{Type: frames.ExtFragment, FragOffset: f.off, More: f.more}}
		}), rules: []rule{blockSrc("2001:db8:1::/48", 13)}, verdict: xdpDrop, fragment: true, noPorts: f.off != 0, rulesDelta: map[uint32]bpf.RuleCounters{13: rc(1, 1, 0)}})
	}
	// A first fragment whose UDP header is cut by the fragment end is not
	// malformed (legal, if unusual): counted under its source.
	add(tcase{name: "ipv4 tiny first fragment", spec: with(udp4(next()), func(s *frames.Spec) { s.MoreFragments = true; s.Payload = 0 }),
		edit: func(b []byte) []byte { b = b[:l3+20+4]; setTotLen(b, 24); return b }, verdict: xdpPass, fragment: true, noPorts: true})

	// Blocklist: /32, /24, /128, /64; longest match wins; each direction;
	// Audit; protected inside blocked.
	{
		i := next()
		add(tcase{name: "block /32", spec: udp4(i), rules: []rule{blockSrc(src4(i).String()+"/32", 1)}, verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{1: rc(1, 1, 0)}})
		i = next()
		add(tcase{name: "block /24", spec: udp4(i), rules: []rule{blockSrc("198.18.1.0/24", 2)}, verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{2: rc(1, 1, 0)}})
		i = next()
		add(tcase{name: "block /128", spec: udp6(i), rules: []rule{blockSrc(src6(i).String()+"/128", 3)}, verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{3: rc(1, 1, 0)}})
		i = next()
		add(tcase{name: "block /64", spec: tcp6(i), rules: []rule{blockSrc("2001:db8:1::/64", 4)}, verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{4: rc(1, 1, 0)}})
		i = next()
		add(tcase{name: "block /0 ipv4 does not block ipv6", spec: udp6(i), rules: []rule{blockSrc("0.0.0.0/0", 5)}, verdict: xdpPass})
		i = next()
		add(tcase{name: "longest match wins: audit /32 inside enforce /16", spec: udp4(i),
			rules:   []rule{blockSrc("198.18.0.0/16", 20), {bpf.TableSource, src4(i).String() + "/32", 21, bpf.ModeAudit}},
			verdict: xdpPass, rulesDelta: map[uint32]bpf.RuleCounters{21: rc(1, 0, 0)}})
		i = next()
		add(tcase{name: "longest match wins: enforce /25 inside audit /24", spec: udp4(i),
			rules:   []rule{{bpf.TableSource, "198.18.1.0/24", 22, bpf.ModeAudit}, blockSrc("198.18.1.0/25", 23)},
			verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{23: rc(1, 1, 0)}})
		i = next()
		add(tcase{name: "longest match wins ipv6: audit /64 inside enforce /48", spec: udp6(i),
			rules:   []rule{blockSrc("2001:db8:1::/48", 24), {bpf.TableSource, "2001:db8:1::/64", 25, bpf.ModeAudit}},
			verdict: xdpPass, rulesDelta: map[uint32]bpf.RuleCounters{25: rc(1, 0, 0)}})
		i = next()
		add(tcase{name: "audit mode passes and counts", spec: udp4(i), rules: []rule{{bpf.TableSource, src4(i).String() + "/32", 26, bpf.ModeAudit}},
			verdict: xdpPass, rulesDelta: map[uint32]bpf.RuleCounters{26: rc(1, 0, 0)}})
		i = next()
		add(tcase{name: "destination rule drops by destination", spec: udp4(i), rules: []rule{{bpf.TableDestination, dst4.String() + "/32", 27, bpf.ModeEnforce}},
			verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{27: rc(1, 1, 0)}})
		i = next()
		add(tcase{name: "destination rule ignores source", spec: udp4(i), rules: []rule{{bpf.TableDestination, src4(i).String() + "/32", 28, bpf.ModeEnforce}},
			verdict: xdpPass})
		i = next()
		add(tcase{name: "source rule ignores destination", spec: udp6(i), rules: []rule{blockSrc(dst6.String()+"/128", 29)}, verdict: xdpPass})
		i = next()
		both := []rule{blockSrc("198.18.0.0/24", 30), {bpf.TableDestination, "198.18.0.0/24", 30, bpf.ModeEnforce}}
		add(tcase{name: "both: matches the destination", spec: udp4(i), rules: both, verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{30: rc(1, 1, 0)}})
		i = next()
		add(tcase{name: "both: matches source and destination, counted once", spec: with(udp4(i), func(s *frames.Spec) { s.Src = netip.MustParseAddr("198.18.0.77") }),
			talker: "198.18.0.77", rules: []rule{{bpf.TableSource, "198.18.0.0/24", 31, bpf.ModeAudit}, {bpf.TableDestination, "198.18.0.0/24", 31, bpf.ModeAudit}},
			verdict: xdpPass, rulesDelta: map[uint32]bpf.RuleCounters{31: rc(1, 0, 0)}})
		i = next()
		add(tcase{name: "protected inside blocked is exempted", spec: udp4(i), rules: []rule{blockSrc("198.18.0.0/15", 32), {bpf.TableProtected, src4(i).String() + "/32", 0, 0}},
			verdict: xdpPass, exempted: true, rulesDelta: map[uint32]bpf.RuleCounters{32: rc(1, 0, 1)}})
		i = next()
		add(tcase{name: "protected ipv6 prefix inside blocked is exempted", spec: tcp6(i), rules: []rule{blockSrc("2001:db8::/32", 33), {bpf.TableProtected, "2001:db8:1::/56", 0, 0}},
			verdict: xdpPass, exempted: true, rulesDelta: map[uint32]bpf.RuleCounters{33: rc(1, 0, 1)}})
		i = next()
		add(tcase{name: "protected elsewhere does not exempt", spec: udp4(i), rules: []rule{blockSrc("198.18.0.0/15", 34), {bpf.TableProtected, "198.18.0.1/32", 0, 0}},
			verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{34: rc(1, 1, 0)}})
	}

	// Byte order: blocking an address does not block its byte-reversed
	// twin (both in 198.18.0.0/15 and 2001:db8::/32).
	add(
		tcase{name: "byte order ipv4: reversed twin passes", spec: with(udp4(0), func(s *frames.Spec) { s.Src = netip.MustParseAddr("198.18.19.198") }),
			talker: "198.18.19.198", rules: []rule{blockSrc("198.19.18.198/32", 40)}, verdict: xdpPass},
		tcase{name: "byte order ipv4: the address itself drops", spec: with(udp4(0), func(s *frames.Spec) { s.Src = netip.MustParseAddr("198.19.18.198") }),
			talker: "198.19.18.198", rules: []rule{blockSrc("198.19.18.198/32", 40)}, verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{40: rc(1, 1, 0)}},
		tcase{name: "byte order ipv6: reversed twin passes", spec: with(udp6(0), func(s *frames.Spec) { s.Src = netip.MustParseAddr("2001:db8:100::b80d:120") }),
			talker: "2001:db8:100::b80d:120", rules: []rule{blockSrc("2001:db8::1:b80d:120/128", 41)}, verdict: xdpPass},
		tcase{name: "byte order ipv6: the address itself drops", spec: with(udp6(0), func(s *frames.Spec) { s.Src = netip.MustParseAddr("2001:db8::1:b80d:120") }),
			talker: "2001:db8::1:b80d:120", rules: []rule{blockSrc("2001:db8::1:b80d:120/128", 41)}, verdict: xdpDrop, rulesDelta: map[uint32]bpf.RuleCounters{41: rc(1, 1, 0)}},
	)

	// Local vs snooped by destination MAC; snooped frames are never dropped.
	add(
		tcase{name: "broadcast is local", spec: with(udp4(next()), func(s *frames.Spec) { s.DstMAC = frames.BroadcastMAC }), verdict: xdpPass},
		tcase{name: "ipv6 multicast is local", spec: with(udp6(next()), func(s *frames.Spec) { s.DstMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1} }), verdict: xdpPass},
		tcase{name: "other host's mac is snooped", spec: with(udp4(next()), func(s *frames.Spec) { s.DstMAC = otherMAC }), verdict: xdpPass},
	)
	{
		i := next()
		add(tcase{name: "snooped blocked frame is matched, not dropped", spec: with(udp4(i), func(s *frames.Spec) { s.DstMAC = otherMAC }),
			rules: []rule{blockSrc(src4(i).String()+"/32", 42)}, verdict: xdpPass, rulesDelta: map[uint32]bpf.RuleCounters{42: rc(1, 0, 0)}})
	}

	// Non-IP: ARP.
	add(tcase{name: "arp is non-ip", spec: udp4(next()), edit: func(b []byte) []byte { b[12], b[13] = 0x08, 0x06; return b }, verdict: xdpPass, kind: nonIP})
	return cs
}

// wantSample is the flow sample case c must produce.
func wantSample(c tcase, frame []byte, local bool) bpf.FlowSample {
	w := bpf.FlowSample{
		Src: c.spec.Src, Dst: c.spec.Dst, Protocol: uint8(c.spec.Protocol),
		Local: local, Fragment: c.fragment, Dropped: c.verdict == xdpDrop,
		FrameLen: uint32(len(frame)), Ifindex: 1, // BPF_PROG_TEST_RUN runs on loopback
	}
	if c.talker != "" {
		w.Src = netip.MustParseAddr(c.talker)
	}
	for id := range c.rulesDelta {
		w.RuleID = id
	}
	if c.sampleProto != 0 {
		w.Protocol = uint8(c.sampleProto)
	}
	if c.noPorts {
		return w
	}
	switch c.spec.Protocol {
	case layers.IPProtocolTCP, layers.IPProtocolUDP:
		w.SrcPort, w.DstPort = c.spec.SrcPort, c.spec.DstPort
	case layers.IPProtocolICMPv4:
		w.SrcPort = uint16(layers.ICMPv4TypeEchoRequest)
	case layers.IPProtocolICMPv6:
		w.SrcPort = uint16(layers.ICMPv6TypeEchoRequest)
	}
	return w
}

func setTotLen(b []byte, n int) { b[l3+2], b[l3+3] = byte(n>>8), byte(n) }

func setPayloadLen(b []byte, n int) { b[l3+4], b[l3+5] = byte(n>>8), byte(n) }

// TestVerdictsAndCounters runs each frame of the table through the program
// and asserts the verdict and every counter delta exactly.
//
// Flow sampling is on at 1 in 1, so every IP packet also yields a sample,
// which proves the parser found the ports (after IPv4 options, after IPv6
// extension headers) and reports the verdict and rule.
func TestVerdictsAndCounters(t *testing.T) {
	d := loadForTest(t, bpf.Config{MaxTrackedSources: 4096, MaxPrefixes: 1024, MaxRules: 64})
	if err := d.SetSampleRate(1); err != nil {
		t.Fatal(err)
	}
	samples, err := ringbuf.NewReader(d.SamplesMap())
	if err != nil {
		t.Fatal(err)
	}
	defer samples.Close()
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			frame := frames.MustBuild(c.spec)
			if c.edit != nil {
				frame = c.edit(frame)
			}
			syncRules(t, d, c.rules)
			beforeStats, beforeTalkers, beforeRules := stats(t, d), talkerMap(t, d), ruleCounters(t, d)

			if got := run(t, d, frame); got != c.verdict {
				t.Fatalf("verdict %d, want %d", got, c.verdict)
			}

			local := c.spec.DstMAC == nil || c.spec.DstMAC[0]&1 == 1 || c.spec.DstMAC.String() == ourMAC.String()
			want := bpf.Stats{Packets: 1, Bytes: uint64(len(frame))}
			if c.verdict == xdpDrop {
				want.Dropped = 1
			} else {
				want.Passed = 1
			}
			if local {
				want.Local = 1
			} else {
				want.Snooped = 1
			}
			switch c.kind {
			case malformed:
				want.Malformed = 1
			case nonIP:
				want.NonIP = 1
			case ipPacket:
				if c.spec.Src.Is4() {
					want.IPv4 = 1
				} else {
					want.IPv6 = 1
				}
				want.TalkerInserts = 1
			}
			if c.fragment {
				want.Fragments = 1
			}
			if c.tagged {
				want.VLANTagged = 1
			}
			if c.exempted {
				want.Exempted = 1
			}
			if got := statsDelta(stats(t, d), beforeStats); got != want {
				t.Errorf("stats delta\n got %+v\nwant %+v", got, want)
			}

			// Exactly one new talker, the source, or none.
			after := talkerMap(t, d)
			var added []string
			for a := range after {
				if _, ok := beforeTalkers[a]; !ok {
					added = append(added, a)
				}
			}
			if c.kind != ipPacket {
				if len(added) != 0 || len(after) != len(beforeTalkers) {
					t.Errorf("talkers created from a %v frame: %v", c.kind, added)
				}
			} else {
				addr := c.talker
				if addr == "" {
					addr = c.spec.Src.String()
				}
				wantT := bpf.Talker{Addr: bpf.AddrFrom(netip.MustParseAddr(addr)), Packets: 1, Bytes: uint64(len(frame))}
				if local {
					wantT.LocalPackets = 1
				} else {
					wantT.SnoopedPackets = 1
				}
				if len(added) != 1 || after[addr] != wantT {
					t.Errorf("new talkers %v, talker %q = %+v; want only %+v", added, addr, after[addr], wantT)
				}
			}

			// Rule counters: exactly the expected deltas, nothing else moved.
			afterRules := ruleCounters(t, d)
			for id, a := range afterRules {
				b := beforeRules[id]
				got := bpf.RuleCounters{Matched: a.Matched - b.Matched, Dropped: a.Dropped - b.Dropped, Exempted: a.Exempted - b.Exempted}
				if got != c.rulesDelta[id] {
					t.Errorf("rule %d delta %+v, want %+v", id, got, c.rulesDelta[id])
				}
			}
			for id, w := range c.rulesDelta {
				if _, ok := afterRules[id]; !ok {
					t.Errorf("rule %d: no counters, want delta %+v", id, w)
				}
			}

			// One flow sample per IP packet, none otherwise. The program
			// has returned, so a sample, if any, is already committed.
			if c.kind != ipPacket {
				if n := samples.AvailableBytes(); n != 0 {
					t.Errorf("%d bytes of samples from a %v frame", n, c.kind)
				}
				return
			}
			samples.SetDeadline(time.Now().Add(time.Second))
			rec, err := samples.Read()
			if err != nil {
				t.Fatalf("read sample: %v", err)
			}
			got, err := bpf.ReadSample(rec.RawSample)
			if err != nil {
				t.Fatal(err)
			}
			if got != wantSample(c, frame, local) {
				t.Errorf("sample\n got %+v\nwant %+v", got, wantSample(c, frame, local))
			}
		})
	}
}

func (k kind) String() string {
	return [...]string{"ip", "malformed", "non-ip"}[k]
}

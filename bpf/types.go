package bpf

import (
	"fmt"
	"net/netip"
)

// Addr is an address as the XDP program stores it: 16 bytes in network byte
// order, IPv4 addresses IPv4-mapped (::ffff:a.b.c.d, RFC 4291 section
// 2.5.5.2). It is the key of the talker map.
type Addr [16]byte

// AddrFrom converts a netip.Addr (IPv4 or IPv6; zones are dropped) to its
// 16-byte form.
func AddrFrom(a netip.Addr) Addr { return Addr(a.As16()) }

// NetIP returns the address as a netip.Addr, IPv4 addresses unmapped, so that
// String gives "198.18.0.1" rather than "::ffff:198.18.0.1".
func (a Addr) NetIP() netip.Addr { return netip.AddrFrom16(a).Unmap() }

// String returns the address in its usual text form.
func (a Addr) String() string { return a.NetIP().String() }

// Table names a rule table of the XDP program.
type Table uint8

const (
	// TableSource holds blocklist prefixes matched against source addresses.
	TableSource Table = 0
	// TableDestination holds blocklist prefixes matched against destination addresses.
	TableDestination Table = 1
	// TableProtected holds protected prefixes: a blocklist match on an
	// address inside one of them is exempted (passed and counted).
	TableProtected Table = 2

	tableCount = 3
)

func (t Table) String() string {
	switch t {
	case TableSource:
		return "source"
	case TableDestination:
		return "destination"
	case TableProtected:
		return "protected"
	}
	return fmt.Sprintf("table(%d)", uint8(t))
}

// Mode says what a blocklist match does.
type Mode uint8

const (
	// ModeEnforce drops matching frames addressed to the interface.
	ModeEnforce Mode = 0
	// ModeAudit counts matching frames and passes them.
	ModeAudit Mode = 1
)

func (m Mode) String() string {
	if m == ModeAudit {
		return "Audit"
	}
	return "Enforce"
}

// Rule is what a prefix maps to in a table: the rule ID that indexes the
// per-rule counters (1..Config.MaxRules-1; 0 for protected prefixes) and the
// mode.
type Rule struct {
	ID   uint32
	Mode Mode
}

// Talker is one source address and its counters, summed over CPUs.
type Talker struct {
	Addr           Addr
	Packets        uint64 // frames
	Bytes          uint64 // sum of frame lengths as XDP sees them (data_end - data)
	LocalPackets   uint64 // frames addressed to this interface (own MAC, broadcast, multicast)
	SnoopedPackets uint64 // frames addressed to other hosts (promiscuous mode)
}

// RuleCounters are one rule's counters, summed over CPUs, in frames.
// Matched counts every frame whose address matched the rule; Dropped and
// Exempted are the parts of Matched that were dropped, or passed because the
// address is protected.
type RuleCounters struct {
	Matched  uint64
	Dropped  uint64
	Exempted uint64
}

// Stats are the program's global counters, summed over CPUs. Packets are
// frames; Bytes are frame lengths as XDP sees them (data_end - data).
// Packets = Passed + Dropped.
type Stats struct {
	Packets            uint64
	Bytes              uint64
	Passed             uint64
	Dropped            uint64
	Malformed          uint64 // claim IPv4/IPv6 but do not parse; passed, no talker
	NonIP              uint64 // neither IPv4 nor IPv6 (or behind more than two VLAN tags); passed
	IPv4               uint64
	IPv6               uint64
	Fragments          uint64 // IPv4 or IPv6 fragments, first, middle and last
	VLANTagged         uint64 // frames with at least one 802.1Q/802.1ad tag
	Local              uint64 // frames addressed to this interface
	Snooped            uint64 // frames addressed to other hosts
	Exempted           uint64 // blocklist matches passed because the address is protected
	TalkerInserts      uint64 // sources given a slot of the talker table by the program (not those carried over at Load)
	TalkerInsertErrors uint64 // inserts that failed for a reason other than a lost race
	SamplesLost        uint64 // flow samples lost to a full ring buffer
	// FilteredSnooped counts frames for other hosts that were ignored
	// because the interface is not meant to be promiscuous (not in Packets).
	FilteredSnooped uint64
	// V4Mapped counts IPv6 packets whose source or destination is
	// IPv4-mapped (::ffff:a.b.c.d, RFC 4291 section 2.5.5.2; not valid on
	// the wire): matched against the IPv4 prefixes, and a v4-mapped source
	// is not counted as a talker (it would alias the IPv4 host).
	V4Mapped uint64
	// TalkersFull counts frames of new sources that found every slot of
	// the talker table taken: not tracked until Talkers frees idle ones.
	TalkersFull uint64
}

func (s *Stats) add(v *lanmonitorLmStats) {
	s.Packets += v.Packets
	s.Bytes += v.Bytes
	s.Passed += v.Passed
	s.Dropped += v.Dropped
	s.Malformed += v.Malformed
	s.NonIP += v.NonIp
	s.IPv4 += v.Ipv4
	s.IPv6 += v.Ipv6
	s.Fragments += v.Fragments
	s.VLANTagged += v.VlanTagged
	s.Local += v.Local
	s.Snooped += v.Snooped
	s.Exempted += v.Exempted
	s.TalkerInserts += v.TalkerInserts
	s.TalkerInsertErrors += v.TalkerInsertErrors
	s.SamplesLost += v.SamplesLost
	s.FilteredSnooped += v.FilteredSnooped
	s.V4Mapped += v.V4Mapped
	s.TalkersFull += v.TalkersFull
}

// FlowSample is one sampled packet (Config sample rate 1-in-N).
type FlowSample struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // host byte order; for ICMP/ICMPv6: type and code
	Protocol         uint8  // IP protocol number (after IPv6 extension headers)
	Local            bool   // addressed to this interface (else snooped)
	Fragment         bool
	Dropped          bool // verdict was XDP_DROP
	RuleID           uint32
	FrameLen         uint32 // bytes
	Ifindex          uint32
}

// ruleKeyFor returns the map key of prefix p in table t. IPv4 prefixes are
// stored IPv4-mapped with 96 added to their length.
func ruleKeyFor(t Table, p netip.Prefix) lanmonitorLmRuleKey {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return lanmonitorLmRuleKey{
		Addr:      lanmonitorLmAddr{Bytes: p.Addr().As16()},
		PrefixLen: uint8(bits),
		Table:     uint8(t),
	}
}

// prefix is the inverse of ruleKeyFor.
func (k lanmonitorLmRuleKey) prefix() (Table, netip.Prefix) {
	a := netip.AddrFrom16(k.Addr.Bytes)
	bits := int(k.PrefixLen)
	if a.Is4In6() {
		a = a.Unmap()
		bits -= 96
	}
	return Table(k.Table), netip.PrefixFrom(a, bits)
}

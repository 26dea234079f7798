// Package prefixes holds the CIDR helpers the agent and the controller share:
// normalising, parsing, ordering and formatting prefixes, and finding which
// protected addresses a block covers (the lockout guard's exemptions).
package prefixes

import (
	"net/netip"
	"slices"
)

// Normalize returns p masked (no host bits), with an IPv4-mapped IPv6
// prefix (::ffff:a.b.c.d/n, n >= 96) written as the IPv4 prefix /n-96 that
// the data plane matches it as.
func Normalize(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

// Parse parses a CIDR or a bare address (a host prefix: /32 or /128) and
// normalises it (Normalize). ok is false when s is neither.
func Parse(s string) (p netip.Prefix, ok bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	return Normalize(p), true
}

// Compare orders prefixes by address (IPv4 before IPv6), then by length.
func Compare(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Format writes a host prefix as a bare address, others as CIDRs.
func Format(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// FormatSorted sorts ps (in place, Compare), drops duplicates, keeps the
// first n at most and formats them (Format). Nil when ps is empty.
func FormatSorted(ps []netip.Prefix, n int) []string {
	slices.SortFunc(ps, Compare)
	ps = slices.Compact(ps)
	if len(ps) > n {
		ps = ps[:n]
	}
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = Format(p)
	}
	return out
}

// Exemptions returns what the blocked prefixes cover of the protected ones:
// two prefixes either nest or are disjoint, so each overlap is the more
// specific of a protected and a blocked prefix. Both lists must be
// normalised (Normalize). The result is unsorted and may hold duplicates
// (FormatSorted sorts and deduplicates). Cost: one map lookup per distinct
// prefix length of the other list, per prefix.
func Exemptions(blocked, protected []netip.Prefix) []netip.Prefix {
	bs, ps := newSet(blocked), newSet(protected)
	var hits []netip.Prefix
	for _, p := range protected {
		if bs.containedIn(p) { // a protected prefix inside a blocked one
			hits = append(hits, p)
		}
	}
	for _, b := range blocked {
		if ps.containedIn(b) { // a blocked prefix inside a protected one
			hits = append(hits, b)
		}
	}
	return hits
}

// set answers "does a member contain this prefix" with one map lookup per
// distinct member length.
type set struct {
	byLen map[int]map[netip.Prefix]struct{}
	lens  []int // distinct lengths present, any family
}

func newSet(ps []netip.Prefix) *set {
	s := &set{byLen: map[int]map[netip.Prefix]struct{}{}}
	for _, p := range ps {
		m := s.byLen[p.Bits()]
		if m == nil {
			m = map[netip.Prefix]struct{}{}
			s.byLen[p.Bits()] = m
			s.lens = append(s.lens, p.Bits())
		}
		m[p] = struct{}{}
	}
	return s
}

func (s *set) containedIn(p netip.Prefix) bool {
	for _, l := range s.lens {
		if l > p.Bits() {
			continue
		}
		q, err := p.Addr().Prefix(l)
		if err != nil {
			continue // the other family
		}
		if _, ok := s.byLen[l][q]; ok {
			return true
		}
	}
	return false
}

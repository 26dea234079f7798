package agent

import (
	"cmp"
	"encoding/binary"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/lanmonitor/lanmonitor/bpf"
)

// TalkerReport is one source address with its cumulative counters and its
// rate over the last report interval.
type TalkerReport struct {
	Address          netip.Addr
	Internal         bool   // inside the interface's internal CIDRs
	Packets          uint64 // frames since the source was first tracked
	Bytes            uint64 // bytes (frame lengths as XDP sees them)
	LocalPackets     uint64 // frames addressed to this interface
	SnoopedPackets   uint64 // frames addressed to other hosts
	BitsPerSecond    uint64 // bits per second over the last interval
	PacketsPerSecond uint64 // packets per second over the last interval
}

// RuleReport is one block's counters on this interface.
type RuleReport struct {
	Name       string
	RuleID     uint32
	Generation int64
	Direction  Direction
	Mode       BlockMode
	Matched    uint64 // frames whose address matched the block
	Dropped    uint64 // of those, dropped
	Exempted   uint64 // of those, passed because the address is protected
	// ExemptedAddresses are the protected addresses the block covers.
	ExemptedAddresses []string
}

// rate is a counter delta turned into a per-second rate.
type rate struct {
	bits, packets uint64
}

// perSecond converts deltas over elapsed into rates, rounded to the nearest
// integer; elapsed <= 0 gives zero.
func perSecond(deltaBytes, deltaPackets uint64, elapsed time.Duration) rate {
	if elapsed <= 0 {
		return rate{}
	}
	s := elapsed.Seconds()
	return rate{bits: uint64(math.Round(float64(deltaBytes) * 8 / s)), packets: uint64(math.Round(float64(deltaPackets) / s))}
}

// delta is cur - prev for a cumulative counter, or cur when the counter went
// backwards (it was reset: the source was evicted and inserted again, or the
// maps were rebuilt), so a reset never yields a negative or huge rate.
func delta(cur, prev uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// rateTracker remembers the last read of every counter to turn the next read
// into rates over the real elapsed time between the two reads. Its entries
// are a slice sorted by address (48 bytes a source, 3 MiB for 65,536),
// merged with each new read: a map of the same content takes three times the
// memory.
type rateTracker struct {
	at      time.Time
	started bool
	entries []trackEntry
	stats   bpf.Stats
	total   rate
	split   splitRates
	// scratch holds the sort buffers of sortByAddr and ratesOf between
	// reports (see buffers).
	scratch [2][]rankKey
}

// splitRates add up the tracked sources' rates inside and outside the
// internal CIDRs.
type splitRates struct {
	internal, external rate
}

// trackEntry is one source's counters at the last read and its rate over
// the interval before that read.
type trackEntry struct {
	addr           bpf.Addr
	packets, bytes uint64
	rate           rate
}

func compareAddr(a, b bpf.Addr) int {
	if c := cmp.Compare(binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])); c != 0 {
		return c
	}
	return cmp.Compare(binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:]))
}

// update takes a new read at now and computes the rates since the previous
// one, and their sums inside and outside the internal prefixes; it sorts
// talkers by address. The first read only sets the baseline: counters
// adopted from an earlier run carry no information about the current rate.
// The elapsed time is monotonic when both reads' times carry the monotonic
// clock (time.Now, a Ticker's ticks: what Manager passes); a time without
// it (a fake clock, a time decoded from the API) that stepped back gives
// no rates for that interval, never negative or huge ones, and the read is
// the next baseline.
func (r *rateTracker) update(now time.Time, talkers []bpf.Talker, stats bpf.Stats, internal []netip.Prefix) {
	r.sortByAddr(talkers)
	elapsed := now.Sub(r.at)
	next := make([]trackEntry, len(talkers))
	var split splitRates
	j := 0
	for i, t := range talkers {
		for j < len(r.entries) && compareAddr(r.entries[j].addr, t.Addr) < 0 {
			j++ // gone since: evicted
		}
		e := trackEntry{addr: t.Addr, packets: t.Packets, bytes: t.Bytes}
		if r.started {
			var prevPackets, prevBytes uint64 // new since the last read: all of it is recent
			if j < len(r.entries) && r.entries[j].addr == t.Addr && t.Packets >= r.entries[j].packets && t.Bytes >= r.entries[j].bytes {
				prevPackets, prevBytes = r.entries[j].packets, r.entries[j].bytes
			}
			e.rate = perSecond(t.Bytes-prevBytes, t.Packets-prevPackets, elapsed)
			if e.rate.packets != 0 { // only active sources cost a lookup
				side := &split.external
				if containsAddr(internal, t.Addr.NetIP()) {
					side = &split.internal
				}
				side.bits += e.rate.bits
				side.packets += e.rate.packets
			}
		}
		next[i] = e
	}
	if r.started {
		r.total = perSecond(delta(stats.Bytes, r.stats.Bytes), delta(stats.Packets, r.stats.Packets), elapsed)
	}
	r.at, r.entries, r.stats, r.started, r.split = now, next, stats, true, split
}

// sameOrder reports whether talkers are the tracker's entries' sources,
// in the same order (the slice update was given).
func (r *rateTracker) sameOrder(talkers []bpf.Talker) bool {
	if len(talkers) != len(r.entries) {
		return false
	}
	for i := range talkers {
		if talkers[i].Addr != r.entries[i].addr {
			return false
		}
	}
	return true
}

// sortByAddr sorts talkers by address, in place, with sortRankKeys (equal
// rates and bytes: address order) and the tracker's sort buffers.
func (r *rateTracker) sortByAddr(talkers []bpf.Talker) {
	if len(talkers) < 512 {
		slices.SortFunc(talkers, func(a, b bpf.Talker) int { return compareAddr(a.Addr, b.Addr) })
		return
	}
	keys, tmp := r.buffers(len(talkers))
	for i := range talkers {
		keys[i] = newRankKey(0, 0, talkers[i].Addr, i)
	}
	sortRankKeysWith(keys, tmp)
	sorted := make([]bpf.Talker, len(talkers))
	for n, k := range keys {
		sorted[n] = talkers[k.i]
	}
	copy(talkers, sorted)
}

// buffers returns the tracker's two sort buffers, n keys long.
func (r *rateTracker) buffers(n int) (keys, tmp []rankKey) {
	if cap(r.scratch[0]) < n {
		r.scratch = [2][]rankKey{make([]rankKey, n), make([]rankKey, n)}
	}
	return r.scratch[0][:n], r.scratch[1][:n]
}

// ratesOf returns the rate of each of talkers (index for index): the
// talkers, put in address order by sortRankKeys, are merged with the
// tracker's entries (address order too) in one linear walk, rather than
// searched one by one. The sort uses the tracker's buffers.
func (r *rateTracker) ratesOf(talkers []bpf.Talker) []rate {
	rates := make([]rate, len(talkers))
	if len(r.entries) == 0 {
		return rates
	}
	if r.sameOrder(talkers) {
		// The read this tracker was just updated with (update sorted it).
		for i := range talkers {
			rates[i] = r.entries[i].rate
		}
		return rates
	}
	keys, tmp := r.buffers(len(talkers))
	for i := range talkers {
		keys[i] = newRankKey(0, 0, talkers[i].Addr, i) // equal rates and bytes: address order
	}
	sortRankKeysWith(keys, tmp)
	j := 0
	for _, k := range keys {
		a := talkers[k.i].Addr
		for j < len(r.entries) && compareAddr(r.entries[j].addr, a) < 0 {
			j++
		}
		if j < len(r.entries) && r.entries[j].addr == a {
			rates[k.i] = r.entries[j].rate
		}
	}
	return rates
}

// rateOf is a source's rate over the last interval (zero if unknown).
func (r *rateTracker) rateOf(a bpf.Addr) rate {
	i, ok := slices.BinarySearchFunc(r.entries, a, func(e trackEntry, a bpf.Addr) int { return compareAddr(e.addr, a) })
	if !ok {
		return rate{}
	}
	return r.entries[i].rate
}

// rank orders talkers by bits per second, then bytes, descending, then by
// address, and keeps the first limit (all when limit <= 0). It sorts compact
// keys (rate, bytes, address as two integers) rather than the 88-byte
// reports or netip.Addr values: for 65,536 sources that is a few
// milliseconds.
func rank(ts []TalkerReport, limit int) []TalkerReport {
	keys := make([]rankKey, len(ts))
	for i := range ts {
		keys[i] = newRankKey(ts[i].BitsPerSecond, ts[i].Bytes, bpf.AddrFrom(ts[i].Address), i)
	}
	sortRankKeys(keys)
	if limit <= 0 || limit > len(ts) {
		limit = len(ts)
	}
	out := make([]TalkerReport, limit)
	for i := range out {
		out[i] = ts[keys[i].i]
	}
	return out
}

// rankTalkers is rank(talkerReports(talkers, tr, internal), limit) without
// building a report for every source first: each talker's rate is found in
// the tracker (sorted by address) by binary search, the compact keys are
// sorted, and reports are made for the first limit only.
func rankTalkers(talkers []bpf.Talker, tr *rateTracker, internal []netip.Prefix, limit int) []TalkerReport {
	keys := make([]rankKey, len(talkers))
	rates := tr.ratesOf(talkers)
	for i, t := range talkers {
		keys[i] = newRankKey(rates[i].bits, t.Bytes, t.Addr, i)
	}
	_, tmp := tr.buffers(len(keys))
	sortRankKeysWith(keys, tmp)
	if limit <= 0 || limit > len(talkers) {
		limit = len(talkers)
	}
	out := make([]TalkerReport, limit)
	for n := range out {
		i := keys[n].i
		t, r := &talkers[i], rates[i]
		a := t.Addr.NetIP()
		out[n] = TalkerReport{
			Address: a, Internal: containsAddr(internal, a),
			Packets: t.Packets, Bytes: t.Bytes, LocalPackets: t.LocalPackets, SnoopedPackets: t.SnoopedPackets,
			BitsPerSecond: r.bits, PacketsPerSecond: r.packets,
		}
	}
	return out
}

// rankKey is what the ranking compares, packed: rate and bytes descending,
// then the 16-byte address ascending.
type rankKey struct {
	bps, bytes, hi, lo uint64
	i                  int
}

func newRankKey(bps, bytes uint64, a bpf.Addr, i int) rankKey {
	return rankKey{bps, bytes, binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:]), i}
}

// sortRankKeys sorts keys in ranking order. It is a least-significant-
// digit radix sort over the key's 32 bytes, read as the ascending words
// ^bps, ^bytes, hi, lo, with one counting pass per byte position that is
// not the same in every key (found by one sweep first): 65,536 IPv4
// sources with equal rates and byte counts take two passes, varied ones
// about a dozen, each a linear sweep, against about a million comparisons
// for a comparison sort. Small slices use the comparison sort.
func sortRankKeys(keys []rankKey) { sortRankKeysWith(keys, nil) }

// sortRankKeysWith is sortRankKeys with tmp, if as long as keys, as the
// radix sort's second buffer.
func sortRankKeysWith(keys, tmp []rankKey) {
	if len(keys) < 512 {
		slices.SortFunc(keys, compareRankKeys)
		return
	}
	words := func(k *rankKey) [4]uint64 { return [4]uint64{^k.bps, ^k.bytes, k.hi, k.lo} }
	// Bits that differ between keys, per word.
	first := words(&keys[0])
	var differ [4]uint64
	for i := range keys {
		w := words(&keys[i])
		for j := range w {
			differ[j] |= w[j] ^ first[j]
		}
	}
	if len(tmp) != len(keys) {
		tmp = make([]rankKey, len(keys))
	}
	src, dst := keys, tmp
	for w := 3; w >= 0; w-- {
		for shift := 0; shift < 64; shift += 8 {
			if differ[w]>>shift&0xff == 0 {
				continue // the same byte in every key
			}
			var start [256]int
			for i := range src {
				start[byte(words(&src[i])[w]>>shift)]++
			}
			sum := 0
			for d, c := range start {
				start[d] = sum
				sum += c
			}
			for i := range src {
				d := byte(words(&src[i])[w] >> shift)
				dst[start[d]] = src[i]
				start[d]++
			}
			src, dst = dst, src
		}
	}
	if &src[0] != &keys[0] {
		copy(keys, src)
	}
}

// compareRankKeys orders keys by rate and bytes descending, then address
// ascending.
func compareRankKeys(a, b rankKey) int {
	switch {
	case a.bps != b.bps:
		return cmp.Compare(b.bps, a.bps)
	case a.bytes != b.bytes:
		return cmp.Compare(b.bytes, a.bytes)
	case a.hi != b.hi:
		return cmp.Compare(a.hi, b.hi)
	}
	return cmp.Compare(a.lo, b.lo)
}

// topTalkers ranks talkers as rank does and returns the first n as reports,
// without building a report for every source: a selection over the tracker's
// rates, O(len(talkers) * log n).
func topTalkers(talkers []bpf.Talker, tr *rateTracker, internal []netip.Prefix, n int) []TalkerReport {
	if n <= 0 || n >= len(talkers) {
		return rankTalkers(talkers, tr, internal, n)
	}
	// A min-heap (by ranking order) of the best n seen so far, by index.
	rates := tr.ratesOf(talkers)
	better := func(i, j int) bool {
		if rates[i].bits != rates[j].bits {
			return rates[i].bits > rates[j].bits
		}
		if talkers[i].Bytes != talkers[j].Bytes {
			return talkers[i].Bytes > talkers[j].Bytes
		}
		return compareAddr(talkers[i].Addr, talkers[j].Addr) < 0
	}
	h := make([]int, 0, n)
	down := func(i int) {
		for {
			l, r, w := 2*i+1, 2*i+2, i
			if l < len(h) && better(h[w], h[l]) {
				w = l
			}
			if r < len(h) && better(h[w], h[r]) {
				w = r
			}
			if w == i {
				return
			}
			h[i], h[w] = h[w], h[i]
			i = w
		}
	}
	for i := range talkers {
		if len(h) < n {
			h = append(h, i)
			for j := len(h) - 1; j > 0 && better(h[(j-1)/2], h[j]); j = (j - 1) / 2 {
				h[j], h[(j-1)/2] = h[(j-1)/2], h[j]
			}
			continue
		}
		if better(i, h[0]) {
			h[0] = i
			down(0)
		}
	}
	picked := make([]bpf.Talker, len(h))
	for k, i := range h {
		picked[k] = talkers[i]
	}
	return rank(talkerReports(picked, tr, internal), n)
}

// talkerReports joins counters with the tracker's rates and marks internal
// addresses.
func talkerReports(talkers []bpf.Talker, tr *rateTracker, internal []netip.Prefix) []TalkerReport {
	out := make([]TalkerReport, len(talkers))
	for i, t := range talkers {
		a := t.Addr.NetIP()
		r := tr.rateOf(t.Addr)
		out[i] = TalkerReport{
			Address: a, Internal: containsAddr(internal, a),
			Packets: t.Packets, Bytes: t.Bytes, LocalPackets: t.LocalPackets, SnoopedPackets: t.SnoopedPackets,
			BitsPerSecond: r.bits, PacketsPerSecond: r.packets,
		}
	}
	return out
}

func containsAddr(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

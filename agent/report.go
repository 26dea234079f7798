package agent

import (
	"cmp"
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
	CIDRs      []string
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
// into rates over the real elapsed time between the two reads.
type rateTracker struct {
	at      time.Time
	talkers map[bpf.Addr]bpf.Talker
	stats   bpf.Stats
	// rates of the last interval, by source.
	rates map[bpf.Addr]rate
	total rate
}

// update takes a new read at now and computes the rates since the previous
// one. The first read only sets the baseline: counters adopted from an
// earlier run carry no information about the current rate.
func (r *rateTracker) update(now time.Time, talkers []bpf.Talker, stats bpf.Stats) {
	first := r.talkers == nil
	elapsed := now.Sub(r.at)
	rates := make(map[bpf.Addr]rate, len(talkers))
	cur := make(map[bpf.Addr]bpf.Talker, len(talkers))
	for _, t := range talkers {
		cur[t.Addr] = t
		if first {
			continue
		}
		prev := r.talkers[t.Addr] // zero when new since the last read
		if t.Packets < prev.Packets || t.Bytes < prev.Bytes {
			prev = bpf.Talker{}
		}
		rates[t.Addr] = perSecond(delta(t.Bytes, prev.Bytes), delta(t.Packets, prev.Packets), elapsed)
	}
	if first {
		r.total = rate{}
	} else {
		r.total = perSecond(delta(stats.Bytes, r.stats.Bytes), delta(stats.Packets, r.stats.Packets), elapsed)
	}
	r.at, r.talkers, r.stats, r.rates = now, cur, stats, rates
}

// rank orders talkers by bits per second, then bytes, descending, then by
// address, and keeps the first limit (all when limit <= 0).
func rank(ts []TalkerReport, limit int) []TalkerReport {
	slices.SortFunc(ts, func(a, b TalkerReport) int {
		if c := cmp.Compare(b.BitsPerSecond, a.BitsPerSecond); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Bytes, a.Bytes); c != 0 {
			return c
		}
		return a.Address.Compare(b.Address)
	})
	if limit > 0 && len(ts) > limit {
		ts = ts[:limit]
	}
	return ts
}

// talkerReports joins counters with the tracker's rates and marks internal
// addresses.
func talkerReports(talkers []bpf.Talker, rates map[bpf.Addr]rate, internal []netip.Prefix) []TalkerReport {
	out := make([]TalkerReport, len(talkers))
	for i, t := range talkers {
		a := t.Addr.NetIP()
		r := rates[t.Addr]
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

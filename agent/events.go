package agent

import (
	"time"

	"github.com/lanmonitor/lanmonitor/internal/prefixes"
	"github.com/lanmonitor/lanmonitor/internal/sse"
)

// ReportEvent is one interface's report as GET /api/v1/events streams it
// and GET /api/v1/history returns it: everything the dashboard draws.
// Counters are cumulative since the maps were created; rates are over the
// interval since the previous report, measured on the monotonic clock.
type ReportEvent struct {
	// Time is when the counters were read (RFC 3339, wall clock).
	Time time.Time `json:"time"`
	// Node is the Kubernetes node name, or the host name standalone.
	Node      string `json:"node"`
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	// State is Attached, NotAttached or Stopped; Message says why.
	State         State   `json:"state"`
	Message       string  `json:"message"`
	XDPMode       XDPMode `json:"xdpMode"`
	XDPModeReason string  `json:"xdpModeReason"`
	// Promiscuous is whether IFF_PROMISC is set on the interface.
	Promiscuous bool `json:"promiscuous"`
	// ReportIntervalSeconds is the configured report interval (seconds).
	ReportIntervalSeconds float64 `json:"reportIntervalSeconds"`
	// ElapsedSeconds is the interval the rates are over (0 for the first
	// report, which only sets the baseline).
	ElapsedSeconds float64 `json:"elapsedSeconds"`
	// Totals are the cumulative counters, as GET /api/v1/stats has them.
	Totals StatsResponse `json:"totals"`
	Rates  EventRates    `json:"rates"`
	// TopTalkers are the report's top N, ranked as GET /api/v1/talkers.
	TopTalkers []TalkerJSON `json:"topTalkers"`
	// Rules are every block in force, in rule ID order.
	Rules []EventRule `json:"rules"`
	// Evictions is how many sources the full talker map pushed out.
	Evictions uint64 `json:"evictions"`
}

// EventRates are an interface's rates over the last report interval, in
// bits per second (frame lengths as XDP sees them, times 8) and packets
// (frames) per second. Internal and external add up the tracked sources
// inside and outside the internal CIDRs (frames without a source address,
// malformed and non-IP, are in neither); local and snooped split every
// frame by its destination MAC (this interface, broadcast or multicast: local).
type EventRates struct {
	BitsPerSecond             uint64 `json:"bitsPerSecond"`
	PacketsPerSecond          uint64 `json:"packetsPerSecond"`
	InternalBitsPerSecond     uint64 `json:"internalBitsPerSecond"`
	InternalPacketsPerSecond  uint64 `json:"internalPacketsPerSecond"`
	ExternalBitsPerSecond     uint64 `json:"externalBitsPerSecond"`
	ExternalPacketsPerSecond  uint64 `json:"externalPacketsPerSecond"`
	LocalPacketsPerSecond     uint64 `json:"localPacketsPerSecond"`
	SnoopedPacketsPerSecond   uint64 `json:"snoopedPacketsPerSecond"`
	DroppedPacketsPerSecond   uint64 `json:"droppedPacketsPerSecond"`
	MalformedPacketsPerSecond uint64 `json:"malformedPacketsPerSecond"`
	NonIPPacketsPerSecond     uint64 `json:"nonIPPacketsPerSecond"`
}

// EventRule is one block's counters (packets) and rates (packets per
// second) in a ReportEvent.
type EventRule struct {
	Name       string    `json:"name"`
	Generation int64     `json:"generation"`
	Direction  Direction `json:"direction"`
	Mode       BlockMode `json:"mode"`
	// CIDRCount is how many CIDRs the block lists; CIDRs holds the first
	// maxEventCIDRs of them (an event stays small whatever the block's size).
	CIDRCount               int      `json:"cidrCount"`
	CIDRs                   []string `json:"cidrs"`
	MatchedPackets          uint64   `json:"matchedPackets"`
	DroppedPackets          uint64   `json:"droppedPackets"`
	ExemptedPackets         uint64   `json:"exemptedPackets"`
	MatchedPacketsPerSecond uint64   `json:"matchedPacketsPerSecond"`
	DroppedPacketsPerSecond uint64   `json:"droppedPacketsPerSecond"`
	ExemptedAddresses       []string `json:"exemptedAddresses"`
}

// maxEventCIDRs bounds EventRule.CIDRs.
const maxEventCIDRs = 8

// newEventHub is the history and stream of one interface's reports: ten
// minutes of them (600 at the minimum report interval of 1 s).
func newEventHub() *sse.Hub {
	return sse.NewHub(sse.Options{MaxAge: 10 * time.Minute})
}

// reportEvent turns report cur, taken after prev (the zero Report for the
// first one), into the event the dashboard streams. Rates of rule counters
// come from the deltas since prev (a counter that went backwards, after a
// rebuild, counts from zero). The reports' times carry the monotonic clock;
// should they not, a clock stepped back gives no rates (elapsed 0), never
// negative ones.
func reportEvent(node string, cfg Config, prev, cur *Report, split splitRates) ReportEvent {
	var elapsed time.Duration
	if !prev.Time.IsZero() {
		elapsed = max(cur.Time.Sub(prev.Time), 0)
	}
	ps, cs := &prev.Stats, &cur.Stats
	pps := func(curN, prevN uint64) uint64 { return perSecond(0, delta(curN, prevN), elapsed).packets }
	ev := ReportEvent{
		Time: cur.Time, Node: node, Interface: cur.Interface, Ifindex: cur.Ifindex,
		State: cur.State, Message: cur.Message, XDPMode: cur.XDPMode, XDPModeReason: cur.XDPModeReason,
		Promiscuous: cur.Promiscuous, ReportIntervalSeconds: cfg.ReportInterval.Seconds(), ElapsedSeconds: elapsed.Seconds(),
		Totals: statsResponse(cur.Stats, cur.TrackedSources, cur.TrackedSourcesCapacity),
		Rates: EventRates{
			BitsPerSecond: cur.BitsPerSecond, PacketsPerSecond: cur.PacketsPerSecond,
			InternalBitsPerSecond: split.internal.bits, InternalPacketsPerSecond: split.internal.packets,
			ExternalBitsPerSecond: split.external.bits, ExternalPacketsPerSecond: split.external.packets,
			LocalPacketsPerSecond: pps(cs.Local, ps.Local), SnoopedPacketsPerSecond: pps(cs.Snooped, ps.Snooped),
			DroppedPacketsPerSecond: pps(cs.Dropped, ps.Dropped), MalformedPacketsPerSecond: pps(cs.Malformed, ps.Malformed),
			NonIPPacketsPerSecond: pps(cs.NonIP, ps.NonIP),
		},
		TopTalkers: talkersJSON(cur.TopTalkers),
		Rules:      make([]EventRule, 0, len(cur.Rules)),
		Evictions:  cur.Evictions,
	}
	if elapsed == 0 {
		ev.Rates = EventRates{}
	}
	prevRules := make(map[string]RuleReport, len(prev.Rules))
	for _, r := range prev.Rules {
		prevRules[r.Name] = r
	}
	cidrs := make(map[string]*Block, len(cfg.Blocks))
	for i := range cfg.Blocks {
		cidrs[cfg.Blocks[i].Name] = &cfg.Blocks[i]
	}
	for _, r := range cur.Rules {
		er := EventRule{
			Name: r.Name, Generation: r.Generation, Direction: r.Direction, Mode: r.Mode,
			MatchedPackets: r.Matched, DroppedPackets: r.Dropped, ExemptedPackets: r.Exempted,
			ExemptedAddresses: nonNil(r.ExemptedAddresses), CIDRs: []string{},
		}
		if b := cidrs[r.Name]; b != nil {
			er.CIDRCount = len(b.CIDRs)
			for _, p := range b.CIDRs[:min(len(b.CIDRs), maxEventCIDRs)] {
				er.CIDRs = append(er.CIDRs, prefixes.Format(prefixes.Normalize(p)))
			}
		}
		if p, ok := prevRules[r.Name]; ok && p.RuleID == r.RuleID && elapsed > 0 {
			er.MatchedPacketsPerSecond = pps(r.Matched, p.Matched)
			er.DroppedPacketsPerSecond = pps(r.Dropped, p.Dropped)
		}
		ev.Rules = append(ev.Rules, er)
	}
	return ev
}

// talkersJSON is the API's form of talker reports.
func talkersJSON(ts []TalkerReport) []TalkerJSON {
	out := make([]TalkerJSON, len(ts))
	for i, t := range ts {
		out[i] = TalkerJSON{
			Address: t.Address.String(), Internal: t.Internal, Packets: t.Packets, Bytes: t.Bytes,
			LocalPackets: t.LocalPackets, SnoopedPackets: t.SnoopedPackets,
			BitsPerSecond: t.BitsPerSecond, PacketsPerSecond: t.PacketsPerSecond,
		}
	}
	return out
}

package agent

import (
	"fmt"
	"reflect"

	"github.com/lanmonitor/lanmonitor/bpf"
)

// counters is every global counter of the XDP program (C struct lm_stats,
// Go bpf.Stats) and where it goes: the Prometheus counter
// lanmonitor_<metric> (per interface) and the field of GET /api/v1/stats
// whose JSON name is json. Adding a counter is a field of lm_stats and of
// bpf.Stats (bpf.TestStatsAddEveryField checks that they agree) and a line
// here; TestEveryCounterInEveryOutput fails until every output has it.
var counters = []struct {
	field        string // of bpf.Stats
	metric, help string
	json         string
}{
	{"Packets", "packets_total", "Frames seen by the XDP hook.", "packets"},
	{"Bytes", "bytes_total", "Bytes seen by the XDP hook (frame lengths, data_end - data).", "bytes"},
	{"Passed", "passed_packets_total", "Frames passed (XDP_PASS).", "passed"},
	{"Dropped", "dropped_packets_total", "Frames dropped by IPBlocks in Enforce mode (XDP_DROP).", "dropped"},
	{"Malformed", "malformed_packets_total", "Frames claiming IPv4/IPv6 that did not parse (passed).", "malformed"},
	{"NonIP", "non_ip_packets_total", "Frames that are neither IPv4 nor IPv6 (passed).", "nonIP"},
	{"IPv4", "ipv4_packets_total", "Well-formed IPv4 packets.", "ipv4"},
	{"IPv6", "ipv6_packets_total", "Well-formed IPv6 packets.", "ipv6"},
	{"Fragments", "fragment_packets_total", "IP fragments.", "fragments"},
	{"VLANTagged", "vlan_tagged_packets_total", "Frames with at least one VLAN tag.", "vlanTagged"},
	{"Local", "local_packets_total", "Frames addressed to this interface (own MAC, broadcast, multicast).", "local"},
	{"Snooped", "snooped_packets_total", "Frames addressed to other hosts, seen in promiscuous mode.", "snooped"},
	{"Exempted", "exempted_packets_total", "Blocklist matches passed because the address is protected.", "exempted"},
	{"TalkerInserts", "talker_inserts_total", "Sources given a slot of the talker table by the XDP program (sources carried over from an earlier table at an upgrade are not counted).", "talkerInserts"},
	{"TalkerInsertErrors", "talker_insert_errors_total", "Sources that could not be inserted into the talker table for another reason than a full table.", "talkerInsertErrors"},
	{"SamplesLost", "flow_samples_lost_total", "Flow samples lost to a full ring buffer.", "samplesLost"},
	{"FilteredSnooped", "filtered_snooped_packets_total", "Frames for other hosts ignored because the interface is not meant to be promiscuous (not in packets_total).", "filteredSnooped"},
	{"V4Mapped", "v4_mapped_packets_total", "IPv6 packets with an IPv4-mapped source or destination (matched as IPv4; the source is not a talker).", "v4Mapped"},
	{"TalkersFull", "talker_table_full_packets_total", "Frames of new sources not tracked because every slot of the talker table was taken (the next read frees idle ones).", "talkersFull"},
}

// counterIndex is, per entry of counters, the index of its field in
// bpf.Stats and in StatsResponse.
var counterIndex = func() (idx []struct{ stats, response int }) {
	st, resp := reflect.TypeFor[bpf.Stats](), reflect.TypeFor[StatsResponse]()
	byJSON := map[string]int{}
	for i := range resp.NumField() {
		byJSON[resp.Field(i).Tag.Get("json")] = i
	}
	for _, c := range counters {
		f, ok := st.FieldByName(c.field)
		if !ok || f.Type.Kind() != reflect.Uint64 {
			panic(fmt.Sprintf("agent.counters: bpf.Stats has no uint64 field %s", c.field))
		}
		r, ok := byJSON[c.json]
		if !ok {
			panic(fmt.Sprintf("agent.counters: StatsResponse has no field with JSON name %q", c.json))
		}
		idx = append(idx, struct{ stats, response int }{f.Index[0], r})
	}
	return idx
}()

// counterValue is counter i of s.
func counterValue(s *bpf.Stats, i int) uint64 {
	return reflect.ValueOf(s).Elem().Field(counterIndex[i].stats).Uint()
}

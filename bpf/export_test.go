package bpf

import "github.com/cilium/ebpf"

// TalkerMaps is the maps of d's talker table, for benchmarks that measure their kernel
// memory.
func TalkerMaps(d *Datapath) []*ebpf.Map {
	return []*ebpf.Map{d.objs.LmSlotOf, d.objs.LmTalkerCounts, d.objs.LmTalkerAddrs, d.objs.LmFreeSlots, d.objs.LmSlotNext}
}

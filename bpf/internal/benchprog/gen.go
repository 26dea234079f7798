// Package benchprog holds the baseline XDP programs of `make bench` (see
// bench.c); nothing outside the benchmarks imports it.
package benchprog

import "github.com/cilium/ebpf"

// -mcpu=v3: xdp_slot_count uses the value an atomic fetch-and-add returns.
//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags "${BPF_CFLAGS} -mcpu=v3" -target bpfel -type bench_addr -type bench_counts -type bench_slot bench bench.c

// SlotCapacity is how many sources xdp_slot_count counts (it never evicts);
// LRUCapacity is xdp_lru_count's capacity, with the headroom an LRU hash
// needs to hold SlotCapacity sources without evicting (its free lists are
// per CPU), as lanmonitor's BenchmarkReadAndRank sizes its own.
const (
	SlotCapacity = 65536
	LRUCapacity  = 1 << 17
)

// Load loads the baselines, the slot layout's counter array sized to one
// stripe of SlotCapacity per possible CPU. The caller closes the returned
// objects.
func Load() (*Objects, error) {
	spec, err := loadBench()
	if err != nil {
		return nil, err
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["slot_cap"].Set(uint32(SlotCapacity)); err != nil {
		return nil, err
	}
	spec.Maps["bench_slot_counts"].MaxEntries = uint32(cpus * SlotCapacity)
	spec.Maps["bench_lru_counts"].MaxEntries = LRUCapacity
	spec.Maps["bench_slot_of"].MaxEntries = SlotCapacity
	spec.Maps["bench_slot_addrs"].MaxEntries = SlotCapacity
	var objs Objects
	if err := spec.LoadAndAssign(&objs.benchObjects, nil); err != nil {
		return nil, err
	}
	return &objs, nil
}

// Objects are the loaded baseline programs and maps.
type Objects struct{ benchObjects }

// Addr is a map key: 16 bytes, network byte order, IPv4 mapped.
type Addr = benchBenchAddr

// Counts is the value of the shared counter map.
type Counts = benchBenchCounts

// Slot is the per-source counters of the two talker layouts.
type Slot = benchBenchSlot

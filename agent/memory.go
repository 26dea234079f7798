package agent

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
)

// MemoryLimitFloor is the Go runtime's soft memory limit when GOMEMLIMIT is
// not set: with 100k blocklist prefixes and 65,536 tracked sources the live
// heap is about 23 MiB, and the limit keeps the garbage of the per-interval
// reads, and the scavenger's slack, from doubling it. Measured resident
// memory: docs/benchmarks.md.
const MemoryLimitFloor = 32 << 20

// TuneMemoryLimit collects the garbage of a configuration load, returns it
// to the OS, and sets the soft memory limit to 1.25 times the live heap,
// never below MemoryLimitFloor. A larger configuration so raises the limit
// instead of making the collector run without pause. Does nothing when
// GOMEMLIMIT is set: the operator decides.
func TuneMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.FreeOSMemory()
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	limit := int64(MemoryLimitFloor)
	if sample[0].Value.Kind() == metrics.KindUint64 {
		limit = max(limit, int64(sample[0].Value.Uint64())*5/4)
	}
	debug.SetMemoryLimit(limit)
}

// Package benchprog holds the baseline XDP programs of `make bench` (see
// bench.c); nothing outside the benchmarks imports it.
package benchprog

//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags ${BPF_CFLAGS} -target bpfel -type bench_addr -type bench_counts bench bench.c

// Load loads both baselines. The caller closes the returned objects.
func Load() (*Objects, error) {
	var objs Objects
	if err := loadBenchObjects(&objs.benchObjects, nil); err != nil {
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

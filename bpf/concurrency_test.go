package bpf_test

import (
	"net/netip"
	"runtime"
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/internal/frames"
)

// TestCapacity fills a talker table of capacity K with K+1 sources: every
// frame passes and is counted; the last source is not tracked until a read
// frees the slots of idle sources, and the evictions show as inserts -
// tracked.
func TestCapacity(t *testing.T) {
	const k = 256
	d := loadForTest(t, bpf.Config{MaxTrackedSources: k})
	src := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(2 + i/256), byte(i)}) }
	frame := func(i int) []byte {
		return frames.MustBuild(with(udp4(0), func(s *frames.Spec) { s.Src = src(i) }))
	}
	var bytes uint64
	send := func(i int) {
		t.Helper()
		bytes += uint64(len(frame(i)))
		if v := run(t, d, frame(i)); v != xdpPass {
			t.Fatalf("source %d: verdict %d, want pass", i, v)
		}
	}
	check := func(step string, packets, inserts, full uint64, tracked int) map[string]bpf.Talker {
		t.Helper()
		st := stats(t, d)
		if st.Packets != packets || st.Passed != packets || st.Bytes != bytes || st.TalkerInserts != inserts ||
			st.TalkersFull != full || st.TalkerInsertErrors != 0 {
			t.Fatalf("%s: stats %+v: want %d packets passed, %d bytes, %d inserts, %d full, 0 insert errors",
				step, st, packets, bytes, inserts, full)
		}
		got := talkerMap(t, d)
		if len(got) != tracked {
			t.Fatalf("%s: %d sources tracked, want %d", step, len(got), tracked)
		}
		return got
	}
	for i := range k + 1 {
		send(i)
	}
	// Every source was new at this read: none is idle, none is evicted.
	if got := check("full", k+1, k, 1, k); got[src(k).String()].Packets != 0 {
		t.Fatalf("source %s tracked in a full table", src(k))
	}
	// Source k again, still no slot; then 10 of the others: the read frees
	// k/16 slots of the idle ones, the lowest slots among equals.
	send(k)
	for i := range 10 {
		send(i)
	}
	got := check("evicted", k+12, k, 2, k-k/16)
	for i := range k {
		_, tracked := got[src(i).String()]
		if want := i < 10 || i >= 10+k/16; tracked != want {
			t.Fatalf("source %d tracked %v, want %v", i, tracked, want)
		}
	}
	send(k)
	got = check("inserted", k+13, k+1, 2, k-k/16+1)
	if tk := got[src(k).String()]; tk.Packets != 1 || tk.Bytes != uint64(len(frame(k))) {
		t.Fatalf("source %s after eviction: %+v, want its 1 frame only", src(k), tk)
	}
	t.Logf("capacity %d: %d inserts, %d tracked, %d evicted", k, k+1, k-k/16+1, k/16)
}

// TestExactUnderConcurrency runs the program on two CPUs at once, each
// goroutine locked to a thread pinned to its own CPU, over many rounds that
// each start from a source not yet in the map, so that both CPUs race to
// insert it. Every frame must be counted: per-source and global counts equal
// exactly the number of runs.
func TestExactUnderConcurrency(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs to run the program concurrently")
	}
	d := loadForTest(t, bpf.Config{})
	const (
		rounds   = 200
		perRound = 100 // runs per CPU per round, one BPF_PROG_TEST_RUN each
	)
	cpus := []int{0, 1}
	var bytes uint64
	for r := range rounds {
		src := netip.AddrFrom4([4]byte{198, 19, byte(r / 256), byte(r)})
		frame := frames.MustBuild(with(udp4(0), func(s *frames.Spec) { s.Src = src }))
		bytes += uint64(len(frame)) * perRound * uint64(len(cpus))
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, len(cpus))
		for _, cpu := range cpus {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := onCPU(cpu, func() error {
					<-start
					for range perRound {
						// Repeat 1: an interrupted run is retried by the
						// library only when repeat > 1, so each call is
						// exactly one execution.
						if _, err := d.Program().Run(&ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					errs <- err
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}

	wantPackets := uint64(rounds * perRound * len(cpus))
	st := stats(t, d)
	if st.Packets != wantPackets || st.Bytes != bytes || st.TalkerInserts != rounds || st.TalkerInsertErrors != 0 {
		t.Fatalf("stats %+v: want %d packets, %d bytes, %d inserts, 0 insert errors", st, wantPackets, bytes, rounds)
	}
	talkers := talkerMap(t, d)
	if len(talkers) != rounds {
		t.Fatalf("%d talkers, want %d", len(talkers), rounds)
	}
	for a, tk := range talkers {
		if tk.Packets != perRound*uint64(len(cpus)) || tk.LocalPackets != tk.Packets {
			t.Errorf("talker %s: %+v, want %d packets, all local", a, tk, perRound*len(cpus))
		}
	}
}

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

// TestCapacity fills a talker map of capacity K with K+1 sources: every frame
// passes and is counted, and the eviction shows as inserts - tracked.
func TestCapacity(t *testing.T) {
	const k = 256
	d := loadForTest(t, bpf.Config{MaxTrackedSources: k})
	var bytes uint64
	for i := range k + 1 {
		src := netip.AddrFrom4([4]byte{198, 18, byte(2 + i/256), byte(i)})
		frame := frames.MustBuild(with(udp4(0), func(s *frames.Spec) { s.Src = src }))
		bytes += uint64(len(frame))
		if v := run(t, d, frame); v != xdpPass {
			t.Fatalf("source %d: verdict %d, want pass", i, v)
		}
	}
	st := stats(t, d)
	if st.Packets != k+1 || st.Passed != k+1 || st.Bytes != bytes || st.TalkerInserts != k+1 || st.TalkerInsertErrors != 0 {
		t.Fatalf("stats %+v: want %d packets passed, %d bytes, %d inserts, 0 insert errors", st, k+1, bytes, k+1)
	}
	tracked := len(talkerMap(t, d))
	evicted := int(st.TalkerInserts) - tracked
	if tracked > k || evicted < 1 {
		t.Fatalf("tracked %d of capacity %d, evicted %d: want at most %d tracked and at least one eviction", tracked, k, evicted, k)
	}
	t.Logf("capacity %d: %d inserts, %d tracked, %d evicted", k, st.TalkerInserts, tracked, evicted)
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

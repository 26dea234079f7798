package bpf_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/bpf/internal/benchprog"
	"github.com/lanmonitor/lanmonitor/internal/frames"
	"github.com/lanmonitor/lanmonitor/internal/privileged"
)

// benchFrames are the frames of `make bench`: a minimal 64-byte IPv4/UDP
// frame and a 74-byte IPv6/TCP frame (no payload).
func benchFrames() []struct {
	name  string
	frame func(src netip.Addr) []byte
} {
	return []struct {
		name  string
		frame func(src netip.Addr) []byte
	}{
		{"ipv4-udp-64", func(src netip.Addr) []byte {
			return frames.MustBuild(frames.Spec{DstMAC: ourMAC, Src: src, Dst: dst4, Protocol: 17, SrcPort: 5353, DstPort: 53, Payload: 22})
		}},
		{"ipv6-tcp-74", func(src netip.Addr) []byte {
			return frames.MustBuild(frames.Spec{DstMAC: ourMAC, Src: src, Dst: dst6, Protocol: 6, SrcPort: 40000, DstPort: 443})
		}},
	}
}

// benchSource is the i-th source of a benchmark, in the frame's family,
// inside 198.18.0.0/15 or 2001:db8::/32.
func benchSource(ipv6 bool, i int) netip.Addr {
	if ipv6 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 2, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
	}
	return netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)})
}

// blocklist returns n prefixes with a realistic mix of lengths: 60% IPv4
// /32, 25% IPv6 /128, 8% /24, 2% /16, 5% /64. They are map entries only,
// never sent; none covers the benchmark frames' addresses, so the frames
// take the common path of a source that matches nothing.
func blocklist(n int) map[netip.Prefix]bpf.Rule {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make(map[netip.Prefix]bpf.Rule, n)
	for len(out) < n {
		var p netip.Prefix
		switch r := rng.IntN(100); {
		case r < 60:
			p = netip.PrefixFrom(randAddr4(rng), 32)
		case r < 85:
			p = netip.PrefixFrom(randAddr6(rng), 128)
		case r < 93:
			p = netip.PrefixFrom(randAddr4(rng), 24)
		case r < 95:
			p = netip.PrefixFrom(randAddr4(rng), 16)
		default:
			p = netip.PrefixFrom(randAddr6(rng), 64)
		}
		p = p.Masked()
		if p.Contains(benchSource(false, 0)) || p.Contains(dst4) || p.Contains(benchSource(true, 0)) || p.Contains(dst6) {
			continue
		}
		out[p] = bpf.Rule{ID: uint32(1 + len(out)%1000)}
	}
	return out
}

func randAddr4(rng *rand.Rand) netip.Addr {
	var b [4]byte
	v := rng.Uint32()
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	if b[0] == 0 || b[0] >= 224 || b[0] == 198 {
		b[0] = 100 // keep clear of 198.18.0.0/15 and of the multicast range
	}
	return netip.AddrFrom4(b)
}

func randAddr6(rng *rand.Rand) netip.Addr {
	var b [16]byte
	for i := range 2 {
		v := rng.Uint64()
		for j := range 8 {
			b[i*8+j] = byte(v >> (8 * j))
		}
	}
	b[0] = 0x2a // global unicast, clear of 2001:db8::/32
	return netip.AddrFrom16(b)
}

// fillTalkers inserts n sources of the family into the talker map by
// running one frame from each through the program.
func fillTalkers(b *testing.B, d *bpf.Datapath, frame func(netip.Addr) []byte, ipv6 bool, n int) {
	for i := range n {
		run(b, d, frame(benchSource(ipv6, i)))
	}
}

// perPacket runs frames through prog, about b.N runs in all, and reports two
// costs per packet: wall-ns/pkt, wall-clock time of the BPF_PROG_TEST_RUN
// calls divided by the runs (what the design brief's figures use; it
// includes the test-run loop), and kernel-ns/pkt, the duration the kernel
// itself reports, which leaves out time the thread was descheduled and so
// holds up on a busy machine. Frames are taken in turn: with many sources,
// each call repeats one source's frame.
func perPacket(b *testing.B, prog *ebpf.Program, frames [][]byte) {
	b.Helper()
	repeat := max(1, b.N/len(frames))
	var wall, kernel time.Duration
	b.ResetTimer()
	for _, f := range frames {
		// An interrupted call is restarted from scratch by the library;
		// count wall time from the last (re)start only.
		start := time.Now()
		ret, d, err := prog.Benchmark(f, repeat, func() { start = time.Now() })
		wall += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if ret != xdpPass {
			b.Fatalf("verdict %d, want pass", ret)
		}
		kernel += d
	}
	n := float64(len(frames))
	b.ReportMetric(float64(wall.Nanoseconds())/n/float64(repeat), "wall-ns/pkt")
	b.ReportMetric(float64(kernel.Nanoseconds())/n, "kernel-ns/pkt")
}

// BenchmarkXDP measures ns per packet through BPF_PROG_TEST_RUN: the floor
// (XDP_PASS only), the Aya-style comparison design, and lanmonitor's program
// with 0, 10k and 100k blocklist prefixes and 1, 1k and 64k tracked sources.
// hack/benchreport turns the output into the ratio table of
// docs/benchmarks.md.
func BenchmarkXDP(b *testing.B) {
	privileged.Require(b)
	base, err := benchprog.Load()
	if err != nil {
		b.Fatal(err)
	}
	defer base.Close()
	ayaBlocklist(b, base)

	for _, bf := range benchFrames() {
		ipv6 := bf.name[:4] == "ipv6"
		b.Run("floor/"+bf.name, func(b *testing.B) {
			perPacket(b, base.XdpFloor, [][]byte{bf.frame(benchSource(ipv6, 0))})
		})
		for _, sources := range []int{1, 1000} {
			b.Run(fmt.Sprintf("aya-hash/sources=%s/%s", count(sources), bf.name), func(b *testing.B) {
				var fs [][]byte
				for i := range min(sources, 64) {
					fs = append(fs, bf.frame(benchSource(ipv6, i*max(1, sources/64))))
				}
				clearMap(b, base.BenchCounters)
				for i := range sources {
					runProg(b, base.XdpHashCount, bf.frame(benchSource(ipv6, i)))
				}
				perPacket(b, base.XdpHashCount, fs)
			})
		}
		// The two talker layouts of BenchmarkTalkerLayouts, 64k sources
		// each, counting only (no blocklist).
		for _, layout := range []struct {
			name string
			prog func(*benchprog.Objects) *ebpf.Program
		}{
			{"lru-percpu-hash", func(o *benchprog.Objects) *ebpf.Program { return o.XdpLruCount }},
			{"slot-array", func(o *benchprog.Objects) *ebpf.Program { return o.XdpSlotCount }},
		} {
			b.Run(fmt.Sprintf("layout/%s/sources=64k/%s", layout.name, bf.name), func(b *testing.B) {
				objs, err := benchprog.Load()
				if err != nil {
					b.Fatal(err)
				}
				defer objs.Close()
				prog := layout.prog(objs)
				for i := range benchprog.SlotCapacity {
					runProg(b, prog, bf.frame(benchSource(ipv6, i)))
				}
				var fs [][]byte
				for i := range 64 {
					fs = append(fs, bf.frame(benchSource(ipv6, i*(benchprog.SlotCapacity/64))))
				}
				perPacket(b, prog, fs)
			})
		}
		for _, prefixes := range []int{0, 10000, 100000} {
			rules := blocklist(prefixes)
			for _, sources := range []int{1, 1000, 65536} {
				b.Run(fmt.Sprintf("lanmonitor/prefixes=%s/sources=%s/%s", count(prefixes), count(sources), bf.name), func(b *testing.B) {
					d := loadForTest(b, bpf.Config{})
					if _, _, err := d.SyncPrefixes(bpf.TableSource, rules); err != nil {
						b.Fatal(err)
					}
					fillTalkers(b, d, bf.frame, ipv6, sources)
					var fs [][]byte
					for i := range min(sources, 64) {
						fs = append(fs, bf.frame(benchSource(ipv6, i*max(1, sources/64))))
					}
					perPacket(b, d.Program(), fs)
				})
			}
		}
	}
}

// ayaBlocklist fills the comparison design's blocklist (a HASH of 1024) with
// 1000 addresses that the benchmark frames do not carry.
func ayaBlocklist(b *testing.B, base *benchprog.Objects) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 1000 {
		a := randAddr4(rng)
		if i%4 == 0 {
			a = randAddr6(rng)
		}
		if err := base.BenchBlocklist.Update(benchprog.Addr{Bytes: a.As16()}, uint32(1), ebpf.UpdateAny); err != nil {
			b.Fatal(err)
		}
	}
}

// clearMap deletes every entry of a hash map.
func clearMap(b *testing.B, m *ebpf.Map) {
	var (
		key  benchprog.Addr
		val  benchprog.Counts
		keys []benchprog.Addr
	)
	it := m.Iterate()
	for it.Next(&key, &val) {
		keys = append(keys, key)
	}
	if err := it.Err(); err != nil {
		b.Fatal(err)
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil {
			b.Fatal(err)
		}
	}
}

func count(n int) string {
	switch {
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	case n == 65536:
		return "64k"
	}
	return fmt.Sprint(n)
}

// BenchmarkExactness runs the comparison design and lanmonitor's program on
// two CPUs at once, one thread pinned to each, all frames from one source,
// and reports the share of executions missing from that source's count
// (lost-%). Executions are counted by exact per-CPU counters in each program.
func BenchmarkExactness(b *testing.B) {
	privileged.Require(b)
	if runtime.NumCPU() < 2 {
		b.Skip("needs two CPUs")
	}
	frame := frames.MustBuild(udp4(7))
	src := frames.Spec{Src: src4(7)}.Src

	b.Run("aya-hash", func(b *testing.B) {
		base, err := benchprog.Load()
		if err != nil {
			b.Fatal(err)
		}
		defer base.Close()
		onTwoCPUs(b, base.XdpHashCount, frame)
		var per []uint64
		if err := base.BenchRuns.Lookup(uint32(0), &per); err != nil {
			b.Fatal(err)
		}
		var runs uint64
		for _, v := range per {
			runs += v
		}
		var c benchprog.Counts
		if err := base.BenchCounters.Lookup(benchprog.Addr{Bytes: src.As16()}, &c); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(100*float64(runs-c.Packets)/float64(runs), "lost-%")
		b.ReportMetric(float64(runs), "runs")
	})
	b.Run("lanmonitor", func(b *testing.B) {
		d := loadForTest(b, bpf.Config{})
		onTwoCPUs(b, d.Program(), frame)
		st := stats(b, d)
		tk := talkerMap(b, d)[src.String()]
		b.ReportMetric(100*float64(st.Packets-tk.Packets)/float64(st.Packets), "lost-%")
		b.ReportMetric(float64(st.Packets), "runs")
	})
}

// onCPU runs fn on the calling goroutine's thread pinned to cpu (per-CPU
// maps count per thread's CPU), and returns fn's error or the pinning's.
func onCPU(cpu int, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	return fn()
}

// onTwoCPUs runs prog on frame from two threads pinned to CPUs 0 and 1,
// b.N runs each in batches.
func onTwoCPUs(b *testing.B, prog *ebpf.Program, frame []byte) {
	const batch = 1000
	var wg sync.WaitGroup
	start := make(chan struct{})
	for cpu := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := onCPU(cpu, func() error {
				<-start
				for n := 0; n < b.N; n += batch {
					if _, err := prog.Run(&ebpf.RunOptions{Data: frame, Repeat: batch}); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Error(err)
			}
		}()
	}
	b.ResetTimer()
	close(start)
	wg.Wait()
}

// BenchmarkTalkerLayouts reads 65,536 sources' counters, summed over the
// CPUs, into []bpf.Talker from two layouts filled with the same frames, in
// one run (issue 11's "a second map layout"; bench.c describes both):
//
//   - read/lanmonitor: bpf.Datapath.Talkers, the product's talker table:
//     counters in an mmapable array, one stripe per CPU, read from memory
//     with the slots' addresses (maps.h);
//   - read/lru-batch: the layout of releases up to 0.3, a per-CPU LRU hash
//     read with batch lookups of 4,096 (the baseline's map of that shape).
//
// map-bytes is each layout's kernel memory (memlock of /proc/self/fdinfo);
// BenchmarkXDP's layout/... rows are the two counting programs' costs per
// packet. hack/bench.sh runs it apart from the per-packet benchmarks (a
// read takes milliseconds, not nanoseconds).
func BenchmarkTalkerLayouts(b *testing.B) {
	privileged.Require(b)
	base, err := benchprog.Load()
	if err != nil {
		b.Fatal(err)
	}
	defer base.Close()
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		b.Fatal(err)
	}
	const n = benchprog.SlotCapacity
	frame := benchFrames()[0].frame
	d := loadForTest(b, bpf.Config{MaxTrackedSources: n})
	for i := range n {
		f := frame(benchSource(false, i))
		runProg(b, base.XdpLruCount, f)
		runProg(b, d.Program(), f)
	}
	frameLen := uint64(len(frame(benchSource(false, 0))))
	// exact checks a read once, before it is timed: every source, with the
	// one local frame it sent. In the timed loop only the count is checked.
	exact := func(b *testing.B, ts []bpf.Talker, err error) {
		if err != nil || len(ts) != n {
			b.Fatalf("%d talkers, err %v; want %d", len(ts), err, n)
		}
		seen := make(map[netip.Addr]bool, n)
		for _, t := range ts {
			seen[t.Addr.NetIP()] = true
			if t.Packets != 1 || t.Bytes != frameLen || t.LocalPackets != 1 || t.SnoopedPackets != 0 {
				b.Fatalf("talker %+v: want 1 local packet of %d bytes", t, frameLen)
			}
		}
		for i := range n {
			if !seen[benchSource(false, i)] {
				b.Fatalf("source %s missing", benchSource(false, i))
			}
		}
	}
	all := func(b *testing.B, ts []bpf.Talker, err error) {
		if err != nil || len(ts) != n {
			b.Fatalf("%d talkers, err %v; want %d", len(ts), err, n)
		}
	}
	b.Run("read/lanmonitor", func(b *testing.B) {
		ts, err := d.Talkers()
		exact(b, ts, err)
		for b.Loop() {
			ts, err := d.Talkers()
			all(b, ts, err)
		}
		b.ReportMetric(float64(mapBytes(b, bpf.TalkerMaps(d)...)), "map-bytes")
	})
	b.Run("read/lru-batch", func(b *testing.B) {
		ts, err := readLRU(base.BenchLruCounts, cpus)
		exact(b, ts, err)
		for b.Loop() {
			ts, err := readLRU(base.BenchLruCounts, cpus)
			all(b, ts, err)
		}
		b.ReportMetric(float64(mapBytes(b, base.BenchLruCounts)), "map-bytes")
	})
}

// readLRU reads every source of the per-CPU LRU hash m as releases up to
// 0.3 read their talker map: batch lookups of 4,096, summed over CPUs.
func readLRU(m *ebpf.Map, cpus int) ([]bpf.Talker, error) {
	const batch = 4096
	keys := make([]benchprog.Addr, batch)
	vals := make([]benchprog.Slot, batch*cpus)
	var out []bpf.Talker
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			t := bpf.Talker{Addr: bpf.Addr(keys[i].Bytes)}
			for cpu := range cpus {
				v := &vals[i*cpus+cpu]
				t.Packets += v.Packets
				t.Bytes += v.Bytes
				t.LocalPackets += v.LocalPackets
				t.SnoopedPackets += v.SnoopedPackets
			}
			out = append(out, t)
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// mapBytes sums the kernel memory the maps account for (memlock in
// /proc/self/fdinfo, bytes).
func mapBytes(b *testing.B, maps ...*ebpf.Map) int64 {
	var total int64
	for _, m := range maps {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD()))
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "memlock:"); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				if err != nil {
					b.Fatal(err)
				}
				total += n
			}
		}
	}
	return total
}

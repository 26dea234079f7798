package agent

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"

	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/internal/frames"
	"github.com/lanmonitor/lanmonitor/internal/lab"
	"github.com/lanmonitor/lanmonitor/internal/privileged"
)

// benchLAN is a node with lan0 and a host sending to it, IPv6 off so that
// only the benchmark's frames flow.
func benchLAN(b *testing.B) (*lab.Lab, *lab.NS, *lab.NS, string) {
	b.Helper()
	l := lab.New(b)
	node, err := l.AddNS("node")
	if err != nil {
		b.Fatal(err)
	}
	host, err := l.AddNS("host")
	if err != nil {
		b.Fatal(err)
	}
	for _, ns := range []*lab.NS{node, host} {
		ns.SetSysctl("net.ipv6.conf.all.disable_ipv6", "1")
		ns.SetSysctl("net.ipv6.conf.default.disable_ipv6", "1")
	}
	if err := l.Veth(node, "lan0", host, "eth0", lab.VethOptions{MACA: benchNodeMAC}); err != nil {
		b.Fatal(err)
	}
	pinRoot, err := os.MkdirTemp(privileged.BPFFS, "lmbench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(pinRoot) })
	return l, node, host, pinRoot
}

// sendSources sends one small UDP frame from each of n sources
// (198.18.0.0/15, n <= 131072) from host's eth0 to the bench node.
func sendSources(b *testing.B, host *lab.NS, n int) {
	b.Helper()
	tx, err := host.Sender("eth0")
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	for i := range n {
		src := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
		tx.Send(frames.MustBuild(frames.Spec{DstMAC: benchNodeMAC, Src: src, Dst: netip.MustParseAddr("198.18.255.254"), Protocol: layers.IPProtocolUDP, Payload: 18}))
	}
}

var benchNodeMAC = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x01, 0x01}

// benchPrefixes returns n distinct prefixes with the realistic mix of the
// bpf benchmarks (mostly /32 and /128, some /24, /16, /64). They are map
// entries only; none is ever a packet's address.
func benchPrefixes(n int, seed uint64) []netip.Prefix {
	rng := rand.New(rand.NewPCG(seed, 7))
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	for len(out) < n {
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		var p netip.Prefix
		switch r := rng.IntN(100); {
		case r < 60:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{100, b[1], b[2], b[3]}), 32)
		case r < 85:
			b[0] = 0x2a
			p = netip.PrefixFrom(netip.AddrFrom16(b), 128)
		case r < 93:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{101, b[1], b[2], 0}), 24)
		case r < 95:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{102 + b[0]%20, b[1], 0, 0}), 16)
		default:
			b[0] = 0x2a
			p = netip.PrefixFrom(netip.AddrFrom16(b), 64).Masked()
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// blocksOf splits prefixes into IPBlocks of at most 1024 CIDRs (the API's
// limit), rule IDs from 1.
func blocksOf(prefixes []netip.Prefix) []Block {
	var out []Block
	for i := 0; i < len(prefixes); i += 1024 {
		end := min(i+1024, len(prefixes))
		out = append(out, Block{Name: fmt.Sprintf("b%d", len(out)), RuleID: uint32(len(out) + 1), Direction: DirectionSource, Mode: BlockModeEnforce, CIDRs: prefixes[i:end]})
	}
	return out
}

// BenchmarkBlocklistSync measures Manager.Apply with 100k prefixes: loading
// them into a running agent, then a change of 1k prefixes (500 removed, 500
// added), which must touch only those.
func BenchmarkBlocklistSync(b *testing.B) {
	_, node, _, pinRoot := benchLAN(b)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	base := Config{Interface: "lan0", Promiscuous: true, ReportInterval: time.Hour}
	all := benchPrefixes(100500, 1)
	first := all[:100000]
	// The second set replaces the first 500 prefixes of the first block by
	// 500 others: 500 deletions and 500 insertions, all rule IDs unchanged.
	changed := append(append([]netip.Prefix{}, all[100000:]...), all[500:100000]...)

	b.Run("load-100k", func(b *testing.B) {
		for b.Loop() {
			m, err := Start(base, Options{PinRoot: pinRoot, NetNS: node.Path, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			cfg := base
			cfg.Blocks = blocksOf(first)
			start := time.Now()
			if err := m.Apply(cfg); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(time.Since(start).Seconds(), "s/100k-prefixes")
			m.Close(true)
		}
	})
	b.Run("change-1k-of-100k", func(b *testing.B) {
		m, err := Start(base, Options{PinRoot: pinRoot, NetNS: node.Path, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close(true)
		cfgA, cfgB := base, base
		cfgA.Blocks, cfgB.Blocks = blocksOf(first), blocksOf(changed)
		if err := m.Apply(cfgA); err != nil {
			b.Fatal(err)
		}
		var total time.Duration
		var n int
		for b.Loop() {
			// Alternate between the two sets: each Apply is a 1k change.
			next := cfgB
			if n%2 == 1 {
				next = cfgA
			}
			t, _ := buildTables(next.Blocks, nil)
			if w, d := diffSize(m, t); w != 500 || d != 500 {
				b.Fatalf("change writes %d and deletes %d entries, want 500 and 500", w, d)
			}
			start := time.Now()
			if err := m.Apply(next); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			n++
		}
		b.ReportMetric(total.Seconds()/float64(n)*1000, "ms/1k-change")
	})
}

// diffSize is how many entries a sync of the source table to t writes (new
// or changed rule) and deletes.
func diffSize(m *Manager, t tables) (written, deleted int) {
	have := map[netip.Prefix]bool{}
	for _, pr := range m.bpfDatapath().Prefixes(0) {
		have[pr.Prefix] = true
		if r, ok := t[0][pr.Prefix]; !ok {
			deleted++
		} else if r != pr.Rule {
			written++
		}
	}
	for p := range t[0] {
		if !have[p] {
			written++
		}
	}
	return written, deleted
}

// BenchmarkReadAndRank measures reading and ranking 65,536 tracked sources
// (the /api/v1/talkers?limit=0 work and the report's top N). report is a
// whole periodic report with a frame since the last one (so the talkers are
// read, not reused): counters, talkers, rates, top 10, rule counters and
// the dashboard event.
func BenchmarkReadAndRank(b *testing.B) {
	_, node, _, pinRoot := benchLAN(b)
	m, err := Start(Config{Interface: "lan0", ReportInterval: time.Hour, MaxTrackedSources: 65536}, Options{PinRoot: pinRoot, NetNS: node.Path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close(true)
	fillSources(b, m.bpfDatapath().Program(), 65536)
	// Two reads of the counters a second apart, with traffic between, as
	// the report loop does: every source has a rate to look up and rank.
	m.mu.Lock()
	m.tick(time.Now().Add(-time.Second))
	fillSources(b, m.bpfDatapath().Program(), 65536)
	m.tick(time.Now())
	m.mu.Unlock()
	if ts, _ := m.Talkers(1); len(ts) != 1 || ts[0].BitsPerSecond == 0 {
		b.Fatalf("top talker %+v: want a rate", ts)
	}
	b.Run("limit=0", func(b *testing.B) {
		for b.Loop() {
			ts, err := m.Talkers(0)
			if err != nil || len(ts) != 65536 {
				b.Fatalf("%d talkers, err %v", len(ts), err)
			}
		}
	})
	// readAll reads every talker once, for the sub-benchmarks of the
	// work after a read. Called with m.mu held.
	readAll := func(b *testing.B) []bpf.Talker {
		all, err := m.dp.Talkers()
		if err != nil || len(all) != 65536 {
			b.Fatalf("%d talkers, err %v", len(all), err)
		}
		return all
	}
	// The ranking of the periodic report (its top 10), without the read.
	b.Run("top10-rank-only", func(b *testing.B) {
		m.mu.Lock()
		defer m.mu.Unlock()
		all := readAll(b)
		for b.Loop() {
			if ts := topTalkers(all, &m.tracker, m.internal, 10); len(ts) != 10 {
				b.Fatalf("%d talkers", len(ts))
			}
		}
	})
	// The periodic report's work after the read: the rates (update, which
	// sorts the read by address) and the top 10.
	b.Run("report-rates-and-top10", func(b *testing.B) {
		m.mu.Lock()
		defer m.mu.Unlock()
		all := readAll(b)
		st, err := m.dp.Stats()
		if err != nil {
			b.Fatal(err)
		}
		read := make([]bpf.Talker, len(all))
		now := time.Now()
		for b.Loop() {
			copy(read, all) // update sorts in place
			now = now.Add(time.Second)
			m.tracker.update(now, read, st, m.internal)
			if ts := topTalkers(read, &m.tracker, m.internal, 10); len(ts) != 10 {
				b.Fatalf("%d talkers", len(ts))
			}
		}
	})
	b.Run("report", func(b *testing.B) {
		m.mu.Lock()
		defer m.mu.Unlock()
		f := frames.MustBuild(frames.Spec{DstMAC: benchNodeMAC, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.255.254"), Protocol: layers.IPProtocolUDP, Payload: 18})
		now := time.Now()
		for b.Loop() {
			if _, err := m.bpfDatapath().Program().Run(&ebpf.RunOptions{Data: f}); err != nil {
				b.Fatal(err)
			}
			now = now.Add(time.Second)
			m.tick(now)
			if m.last.TrackedSources != 65536 || len(m.last.TopTalkers) != 10 {
				b.Fatalf("report: %d sources, %d top talkers", m.last.TrackedSources, len(m.last.TopTalkers))
			}
		}
	})
	b.Run("read-only", func(b *testing.B) {
		for b.Loop() {
			if ts, err := m.dp.Talkers(); err != nil || len(ts) != 65536 {
				b.Fatalf("%d talkers, err %v", len(ts), err)
			}
		}
	})
}

// fillSources runs one frame from each of n sources (198.18.0.0/15)
// through prog.
func fillSources(b *testing.B, prog *ebpf.Program, n int) {
	for i := range n {
		src := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
		f := frames.MustBuild(frames.Spec{DstMAC: benchNodeMAC, Src: src, Dst: netip.MustParseAddr("198.18.255.254"), Protocol: layers.IPProtocolUDP, Payload: 18})
		if _, err := prog.Run(&ebpf.RunOptions{Data: f}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAgentMemory runs the real agent binary with 100k blocklist
// prefixes (98 IPBlocks in one file) and 65,536 tracked sources, and reports
// its resident memory (VmRSS, and the peak VmHWM) after an API read of every
// talker.
func BenchmarkAgentMemory(b *testing.B) {
	_, node, host, pinRoot := benchLAN(b)
	dir := b.TempDir()
	bin := filepath.Join(dir, "lanmonitor-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/lanmonitor-agent").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	var sb strings.Builder
	sb.WriteString("apiVersion: lanmonitor.io/v1alpha1\nkind: LanMonitor\nmetadata: {name: m}\nspec: {reportInterval: 1s}\n")
	for _, blk := range blocksOf(benchPrefixes(100000, 1)) {
		fmt.Fprintf(&sb, "---\napiVersion: lanmonitor.io/v1alpha1\nkind: IPBlock\nmetadata: {name: %s}\nspec:\n  cidrs:\n", blk.Name)
		for _, p := range blk.CIDRs {
			fmt.Fprintf(&sb, "  - %s\n", p)
		}
	}
	file := filepath.Join(dir, "m.yaml")
	os.WriteFile(file, []byte(sb.String()), 0o600)
	for b.Loop() {
		cmd := exec.Command(bin, "standalone", "-i", "lan0", "-f", file, "--netns", node.Path, "--pin-root", pinRoot, "--listen", "127.0.0.1:19479")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := lab.Start(cmd); err != nil {
			b.Fatal(err)
		}
		waitHTTP(b, "http://127.0.0.1:19479/readyz", 30*time.Second)
		sendSources(b, host, 65536)
		time.Sleep(3500 * time.Millisecond) // three reports of 65,536 sources
		rss, _ := procMemory(b, cmd.Process.Pid)
		b.ReportMetric(rss/(1<<20), "MiB-rss")
		// An API read of every talker is the heaviest request.
		waitHTTP(b, "http://127.0.0.1:19479/api/v1/talkers?limit=0", 10*time.Second)
		time.Sleep(3 * time.Second)
		rss, hwm := procMemory(b, cmd.Process.Pid)
		b.ReportMetric(rss/(1<<20), "MiB-rss-after-full-read")
		// The share of the resident set that is the agent's own (heap,
		// stacks); the rest is the binary's file pages and the talker
		// table's arrays, which are kernel map memory mapped in.
		b.ReportMetric(procField(b, cmd.Process.Pid, "RssAnon:")/(1<<20), "MiB-rss-anon")
		b.ReportMetric(hwm/(1<<20), "MiB-peak")
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
}

func waitHTTP(b *testing.B, url string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		out, err := exec.Command("curl", "-sf", "-o", "/dev/null", url).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: %v %s", url, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// procMemory reads VmRSS and VmHWM of pid, in bytes.
func procMemory(b *testing.B, pid int) (rss, hwm float64) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseFloat(f[1], 64)
			if f[0] == "VmRSS:" {
				rss = kb * 1024
			} else {
				hwm = kb * 1024
			}
		}
	}
	return rss, hwm
}

// procField is a kB field of /proc/PID/status, in bytes.
func procField(b *testing.B, pid int, name string) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == name {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	b.Fatalf("/proc/%d/status has no %s", pid, name)
	return 0
}

// BenchmarkVethThroughput sends 64-byte frames as fast as one sender can
// over a veth pair for a second, without and with the agent attached
// (native XDP, 10k-prefix blocklist the frames do not match), and reports
// the frames per second the node's interface received.
func BenchmarkVethThroughput(b *testing.B) {
	_, node, host, pinRoot := benchLAN(b)
	f := frames.MustBuild(frames.Spec{DstMAC: benchNodeMAC, Src: netip.MustParseAddr("198.18.0.2"), Dst: netip.MustParseAddr("198.18.0.1"), Protocol: layers.IPProtocolUDP, Payload: 18})
	measure := func(b *testing.B) {
		tx, err := host.Sender("eth0")
		if err != nil {
			b.Fatal(err)
		}
		defer tx.Close()
		for b.Loop() {
			before := rxPackets(b, node)
			start := time.Now()
			for time.Since(start) < time.Second {
				for range 256 {
					tx.Send(f)
				}
			}
			elapsed := time.Since(start)
			time.Sleep(50 * time.Millisecond)
			b.ReportMetric(float64(rxPackets(b, node)-before)/elapsed.Seconds(), "frames/s")
		}
	}
	b.Run("without-agent", measure)
	b.Run("with-agent", func(b *testing.B) {
		cfg := Config{Interface: "lan0", Promiscuous: true, ReportInterval: time.Second, Blocks: blocksOf(benchPrefixes(10000, 3))}
		m, err := Start(cfg, Options{PinRoot: pinRoot, NetNS: node.Path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close(true)
		measure(b)
	})
}

func rxPackets(b *testing.B, ns *lab.NS) uint64 {
	l, err := ns.Link("lan0")
	if err != nil {
		b.Fatal(err)
	}
	return l.Attrs().Statistics.RxPackets
}

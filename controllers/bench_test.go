package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lanmonitor/lanmonitor/agent/kernel"
	"github.com/lanmonitor/lanmonitor/agent/kernel/fake"
	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

// BenchmarkController measures the control plane with real agents
// (agent.RunKubernetes on kernel/fake, each with its own watches) on the real
// API server, at 100 and at 1,000 nodes (run with e.g. -bench=Controller
// -benchtime=20x):
//
//   - IPBlockPropagation: time from creating an IPBlock until its prefix is
//     in every node's maps (the fake datapath's rule tables), each node
//     tracking 100 talkers (p50-ms, p99-ms over b.N blocks; first-node:
//     until the first node's; enforced: until the IPBlock says Enforced,
//     every node's status written); the controller's API writes per
//     IPBlock created (all of them, and those of the IPBlock status); the
//     API server's, etcd's and this process's (controller and agents) CPU
//     during the measurement, in cores, and their resident memory.
//   - WritesPerInterval: API writes per node per report interval while every
//     agent's counters change continuously, 1s interval.
//   - StatusSize: JSON size of the LanMonitor and an IPBlock, every node
//     reporting 100 distinct talkers (topN 100, the maximum).
//
// The framework runs each sub-benchmark once with b.N=1 before the real
// run; the measurements that do not depend on b.N are taken once and
// reported by both runs.
func BenchmarkController(b *testing.B) {
	for _, nodes := range []int{100, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) { benchControlPlane(b, nodes, 0) })
		// The agents as before they waited agent.DefaultStatusSettle.
		b.Run(fmt.Sprintf("nodes=%d,settle=none", nodes), func(b *testing.B) { benchControlPlane(b, nodes, -1) })
	}
}

// benchControlPlane runs the sub-benchmarks at nodes agents with the given
// --status-settle (0: the default, < 0: none).
func benchControlPlane(b *testing.B, nodes int, settle time.Duration) {
	cleanup(b)
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("node-%04d", i)
	}
	start := time.Now()
	parallel(b, nodes, 16, func(i int) error {
		createNodes(b, node{name: names[i]})
		return nil
	})
	ctl := startController(b, true)
	create(b, monitor("lan", time.Second))
	tracker := newMapTracker()
	agents := startAgents(b, agentOptions{setup: func(n string, k *fake.Kernel) { k.OnSync(tracker.node(n)) }, statusSettle: settle}, names...)
	parallel(b, nodes, 16, func(i int) error {
		agents[names[i]].receive(b, talkers(i, 100)...)
		return nil
	})
	eventually(b, 5*time.Minute, func() error {
		if r := getMonitor(b, "lan").Status.Nodes.Ready; r != int32(nodes) {
			return fmt.Errorf("%d of %d nodes ready", r, nodes)
		}
		return nil
	})
	b.Logf("%d nodes, their agents attached and reporting, after %v", nodes, time.Since(start))

	b.Run("IPBlockPropagation", func(b *testing.B) {
		var lat, first, enforced []time.Duration
		var ctlWrites, blockWrites int
		usage := startUsage(b)
		for i := range b.N {
			name := fmt.Sprintf("bench-%d", i)
			prefix := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
			before := ctl.writes.snapshot()
			t0 := time.Now()
			create(b, ipBlock(name, prefix.String()))
			tracker.wait(b, prefix, nodes)
			lat = append(lat, time.Since(t0))
			b.Logf("block %d: in every node's maps after %v; %s", i, lat[len(lat)-1].Round(time.Millisecond), tracker.spread(prefix, t0))
			first = append(first, tracker.first(prefix).Sub(t0))
			waitEnforced(b, name, int32(nodes))
			enforced = append(enforced, time.Since(t0))
			// Let the rollup settle (its writes are limited to one per
			// report interval), then count them.
			time.Sleep(2 * time.Second)
			for k, v := range ctl.writes.snapshot() {
				ctlWrites += v - before[k]
				if strings.Contains(k, "IPBlock") {
					blockWrites += v - before[k]
				}
			}
			if err := env.Client.Delete(context.Background(), ipBlock(name)); err != nil {
				b.Fatal(err)
			}
			tracker.wait(b, prefix, 0)
			tracker.forget(prefix)
			// Let the deletion's tail (every node's status write, the
			// rollups) settle, so that each sample measures one change on
			// a quiet cluster.
			eventually(b, 2*time.Minute, func() error {
				var l lanmonitorv1alpha1.LanMonitorNodeList
				if err := env.Client.List(context.Background(), &l); err != nil {
					return err
				}
				for _, n := range l.Items {
					if len(n.Status.IPBlocks) != 0 {
						return fmt.Errorf("%s still reports %s", n.Name, n.Status.IPBlocks[0].Name)
					}
				}
				return nil
			})
			time.Sleep(time.Second)
		}
		metrics := usage.stop()
		slices.Sort(lat)
		slices.Sort(first)
		slices.Sort(enforced)
		pct := func(d []time.Duration, p float64) float64 {
			return float64(d[int(p*float64(len(d)-1)+0.5)]) / float64(time.Millisecond)
		}
		metrics["p50-ms"] = pct(lat, 0.5)
		metrics["p99-ms"] = pct(lat, 0.99)
		metrics["first-node-p50-ms"] = pct(first, 0.5)
		metrics["enforced-p50-ms"] = pct(enforced, 0.5)
		metrics["controller-writes/block"] = float64(ctlWrites) / float64(b.N)
		metrics["ipblock-writes/block"] = float64(blockWrites) / float64(b.N)
		reportAll(b, metrics)
	})

	// The sub-benchmarks below measure once, whatever b.N: one measurement
	// takes 10 to 60 seconds.
	var writes map[string]float64
	b.Run("WritesPerInterval", func(b *testing.B) {
		defer func() { reportAll(b, writes) }()
		if writes != nil {
			return
		}
		const intervals = 10
		agentBefore, _ := statusWrites(b)
		ctlBefore := ctl.writes.snapshot()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { // traffic: counters change every 100ms on every node
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				for i, n := range names {
					agents[n].receive(b, talkers(i, 1)...)
				}
			}
		})
		time.Sleep(intervals * time.Second)
		close(stop)
		wg.Wait()
		agentAfter, _ := statusWrites(b)
		agentWrites := agentAfter - agentBefore
		ctlAfter := ctl.writes.snapshot()
		var ctlWrites int
		for k, v := range ctlAfter {
			ctlWrites += v - ctlBefore[k]
		}
		writes = map[string]float64{
			"agent-writes/node/interval": float64(agentWrites) / float64(nodes*intervals),
			"controller-writes/interval": float64(ctlWrites) / intervals,
			"writes/node/interval":       float64(ctlWrites+agentWrites) / float64(nodes*intervals),
		}
	})

	var sizes map[string]float64
	b.Run("StatusSize", func(b *testing.B) {
		defer func() { reportAll(b, sizes) }()
		if sizes != nil {
			return
		}
		create(b, ipBlock("scanners", "198.19.0.0/16"))
		waitEnforced(b, "scanners", int32(nodes))
		m := getMonitor(b, "lan")
		m.Spec.TopN = 100
		if err := env.Client.Update(context.Background(), m); err != nil {
			b.Fatal(err)
		}
		var size int
		eventually(b, 2*time.Minute, func() error {
			m := getMonitor(b, "lan")
			if m.Status.Nodes.Ready != int32(nodes) || len(m.Status.TopTalkers) != 100 {
				return fmt.Errorf("nodes %+v, %d talkers", m.Status.Nodes, len(m.Status.TopTalkers))
			}
			data, err := json.Marshal(m)
			size = len(data)
			return err
		})
		data, err := json.Marshal(getBlock(b, "scanners"))
		if err != nil {
			b.Fatal(err)
		}
		sizes = map[string]float64{"lanmonitor-bytes": float64(size), "ipblock-bytes": float64(len(data))}
	})

	for _, a := range agents {
		if err := a.Stop(); err != nil {
			b.Fatal(err)
		}
	}
	ctl.stop()
	cleanup(b)
}

// reportAll reports metrics, and hides ns/op (meaningless here).
func reportAll(b *testing.B, metrics map[string]float64) {
	for unit, v := range metrics {
		b.ReportMetric(v, unit)
	}
	b.ReportMetric(0, "ns/op")
}

// talkers returns one second of traffic from n distinct sources for node
// i: 2001:db8:<i>::<j+1> sends 1,000,000 - j bytes in 1,000 frames.
func talkers(i, n int) []fake.Frame {
	out := make([]fake.Frame, n)
	for j := range out {
		out[j] = fake.Frame{
			Src:     netip.MustParseAddr(fmt.Sprintf("2001:db8:%x::%x", i, j+1)),
			Dst:     netip.MustParseAddr("2001:db8::1"),
			Packets: 1000, Bytes: uint64(1_000_000 - j),
		}
	}
	return out
}

// mapTracker follows the agents' rule tables (kernel/fake's OnSync): which
// source prefixes are in each node's maps.
type mapTracker struct {
	mu      sync.Mutex
	changed chan struct{}
	tables  map[string]map[netip.Prefix]bpf.Rule // by node
	firstAt map[netip.Prefix]time.Time           // when a prefix was first in a node's maps
	arrive  map[netip.Prefix][]time.Time         // when it reached each node's maps, in order
}

func newMapTracker() *mapTracker {
	return &mapTracker{changed: make(chan struct{}, 1), tables: map[string]map[netip.Prefix]bpf.Rule{},
		firstAt: map[netip.Prefix]time.Time{}, arrive: map[netip.Prefix][]time.Time{}}
}

// forget forgets when p reached the nodes' maps.
func (t *mapTracker) forget(p netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.firstAt, p)
	delete(t.arrive, p)
}

// spread describes when p reached the nodes' maps, counted from t0: the
// first node, then the 10th, 50th, 90th and 99th percentile of nodes.
func (t *mapTracker) spread(p netip.Prefix, t0 time.Time) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	arr := t.arrive[p]
	if len(arr) == 0 {
		return "in no node's maps"
	}
	at := func(q float64) time.Duration { return arr[int(q*float64(len(arr)-1))].Sub(t0).Round(time.Millisecond) }
	return fmt.Sprintf("first node %v, 10%% %v, 50%% %v, 90%% %v, 99%% %v", at(0), at(0.1), at(0.5), at(0.9), at(0.99))
}

// first returns when p first reached a node's maps.
func (t *mapTracker) first(p netip.Prefix) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.firstAt[p]
}

// node returns the OnSync callback of node's kernel.
func (t *mapTracker) node(name string) func(kernel.Tables) {
	return func(tables kernel.Tables) {
		now := time.Now()
		t.mu.Lock()
		for p := range tables[bpf.TableSource] {
			if _, ok := t.tables[name][p]; !ok {
				t.arrive[p] = append(t.arrive[p], now)
			}
		}
		t.tables[name] = tables[bpf.TableSource]
		for p := range tables[bpf.TableSource] {
			if _, ok := t.firstAt[p]; !ok {
				t.firstAt[p] = now
			}
		}
		t.mu.Unlock()
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

// count is the number of nodes whose maps hold p.
func (t *mapTracker) count(p netip.Prefix) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, src := range t.tables {
		if _, ok := src[p]; ok {
			n++
		}
	}
	return n
}

// wait waits until p is in the maps of exactly nodes nodes.
func (t *mapTracker) wait(b *testing.B, p netip.Prefix, nodes int) {
	deadline := time.After(30 * time.Second)
	for t.count(p) != nodes {
		select {
		case <-t.changed:
		case <-deadline:
			b.Fatalf("%s in the maps of %d nodes after 30s, want %d", p, t.count(p), nodes)
		}
	}
}

// usage measures the CPU (cores, averaged) and resident memory (MiB, at the
// end) of the API server, etcd and this process (the controller and every
// agent) between startUsage and stop.
type usage struct {
	b     *testing.B
	t0    time.Time
	pids  map[string]int
	start map[string]float64
}

func startUsage(b *testing.B) *usage {
	apiserver, _, err := testenv.APIServerProcess(env.Config.Host)
	if err != nil {
		b.Fatal(err)
	}
	etcd, err := testenv.EtcdProcess()
	if err != nil {
		b.Fatal(err)
	}
	u := &usage{b: b, t0: time.Now(), pids: map[string]int{"apiserver": apiserver, "etcd": etcd, "test-process": os.Getpid()},
		start: map[string]float64{}}
	for name, pid := range u.pids {
		if u.start[name], err = testenv.ProcessCPU(pid); err != nil {
			b.Fatal(err)
		}
	}
	return u
}

func (u *usage) stop() map[string]float64 {
	elapsed := time.Since(u.t0).Seconds()
	out := map[string]float64{}
	for name, pid := range u.pids {
		cpu, err := testenv.ProcessCPU(pid)
		if err != nil {
			u.b.Fatal(err)
		}
		rss, err := testenv.ProcessRSS(pid)
		if err != nil {
			u.b.Fatal(err)
		}
		out[name+"-cores"] = (cpu - u.start[name]) / elapsed
		out[name+"-MiB"] = float64(rss) / (1 << 20)
	}
	return out
}

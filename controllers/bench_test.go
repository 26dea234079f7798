package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lanmonitor/lanmonitor/agent/kernel"
	"github.com/lanmonitor/lanmonitor/agent/kernel/fake"
	"github.com/lanmonitor/lanmonitor/bpf"
)

// BenchmarkController measures the controller with real agents
// (agent.RunKubernetes on kernel/fake) on the real API server (run with e.g.
// -bench=Controller -benchtime=20x):
//
//   - IPBlockPropagation: time from creating an IPBlock until its prefix is
//     in every node's maps (the fake datapath's rule tables), 100 nodes
//     each tracking 100 talkers (p50-ms, p99-ms over b.N blocks).
//   - WritesPerInterval: API writes per node per report interval while every
//     agent's counters change continuously, 100 nodes, 1s interval.
//   - StatusSize: JSON size of the LanMonitor (and IPBlock), every node
//     reporting 100 distinct talkers (topN 100, the maximum), at 100 and
//     1,000 nodes.
//
// The framework runs each sub-benchmark once with b.N=1 before the real
// run; the measurements that do not depend on b.N are taken once and
// reported by both runs.
func BenchmarkController(b *testing.B) {
	const nodes = 100
	cleanup(b)
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("node-%03d", i)
	}
	parallel(b, nodes, 16, func(i int) error {
		createNodes(b, node{name: names[i]})
		return nil
	})
	ctl := startController(b, true)
	create(b, monitor("lan", time.Second))
	tracker := newMapTracker()
	agents := startAgents(b, agentOptions{setup: func(n string, k *fake.Kernel) { k.OnSync(tracker.node(n)) }}, names...)
	for i, n := range names {
		agents[n].receive(b, talkers(i, 100)...)
	}

	b.Run("IPBlockPropagation/nodes=100", func(b *testing.B) {
		var lat []time.Duration
		for i := range b.N {
			name := fmt.Sprintf("bench-%d", i)
			prefix := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
			start := time.Now()
			create(b, ipBlock(name, prefix.String()))
			tracker.wait(b, prefix, nodes)
			lat = append(lat, time.Since(start))
			if err := env.Client.Delete(context.Background(), ipBlock(name)); err != nil {
				b.Fatal(err)
			}
			tracker.wait(b, prefix, 0)
			// Let the deletion's tail (rollups, cache updates) settle, so
			// that each sample measures one change on a quiet cluster.
			time.Sleep(time.Second)
		}
		slices.Sort(lat)
		pct := func(p float64) float64 {
			return float64(lat[int(p*float64(len(lat)-1)+0.5)]) / float64(time.Millisecond)
		}
		b.ReportMetric(pct(0.5), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
		b.ReportMetric(0, "ns/op")
	})

	// The sub-benchmarks below measure once, whatever b.N: one measurement
	// takes 10 to 60 seconds.
	var writes map[string]float64
	b.Run("WritesPerInterval/nodes=100", func(b *testing.B) {
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
			"agent-writes/node/interval": float64(agentWrites) / (nodes * intervals),
			"controller-writes/interval": float64(ctlWrites) / intervals,
			"writes/node/interval":       float64(ctlWrites+agentWrites) / (nodes * intervals),
		}
	})

	var size100 map[string]float64
	b.Run("StatusSize/nodes=100", func(b *testing.B) {
		defer func() { reportAll(b, size100) }()
		if size100 != nil {
			return
		}
		m := getMonitor(b, "lan")
		m.Spec.TopN = 100
		if err := env.Client.Update(context.Background(), m); err != nil {
			b.Fatal(err)
		}
		var size int
		eventually(b, 30*time.Second, func() error {
			m := getMonitor(b, "lan")
			if m.Status.Nodes.Ready != nodes || len(m.Status.TopTalkers) != 100 {
				return fmt.Errorf("nodes %+v, %d talkers", m.Status.Nodes, len(m.Status.TopTalkers))
			}
			data, err := json.Marshal(m)
			size = len(data)
			return err
		})
		size100 = map[string]float64{"lanmonitor-bytes": float64(size)}
	})

	for _, a := range agents {
		if err := a.Stop(); err != nil {
			b.Fatal(err)
		}
	}
	ctl.stop()
	cleanup(b)

	var size1000 map[string]float64
	b.Run("StatusSize/nodes=1000", func(b *testing.B) {
		defer func() { reportAll(b, size1000) }()
		if size1000 != nil {
			return
		}
		startController(b, false)
		m := monitor("lan", time.Second)
		m.Spec.TopN = 100
		create(b, m, ipBlock("scanners", "198.18.0.0/15"))
		sizes := reportFromNodes(b, 1000, "lan", "scanners")
		size1000 = map[string]float64{"lanmonitor-bytes": float64(sizes.monitor), "ipblock-bytes": float64(sizes.block)}
		cleanup(b)
	})
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
}

func newMapTracker() *mapTracker {
	return &mapTracker{changed: make(chan struct{}, 1), tables: map[string]map[netip.Prefix]bpf.Rule{}}
}

// node returns the OnSync callback of node's kernel.
func (t *mapTracker) node(name string) func(kernel.Tables) {
	return func(tables kernel.Tables) {
		t.mu.Lock()
		t.tables[name] = tables[bpf.TableSource]
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

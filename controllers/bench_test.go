package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/controllers/internal/fakeagent"
)

// BenchmarkController measures the controller with simulated agents on the
// real API server (run with e.g. -bench=Controller -benchtime=20x):
//
//   - IPBlockPropagation: time from creating an IPBlock until every node's
//     LanMonitorNode status reports it applied, 100 nodes reporting the
//     default top 10 talkers (p50-ms, p99-ms over b.N blocks).
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
	agents := startAgents(b, fakeagent.Options{}, names...)
	for i, n := range names {
		agents[n].SetInterface("lan", fakeagent.Interface{TopTalkers: talkers(i, 100)})
	}
	tracker := trackApplied(b)

	b.Run("IPBlockPropagation/nodes=100", func(b *testing.B) {
		var lat []time.Duration
		for i := range b.N {
			name := fmt.Sprintf("bench-%d", i)
			start := time.Now()
			create(b, ipBlock(name, "198.18.0.0/24"))
			tracker.wait(b, name, nodes)
			lat = append(lat, time.Since(start))
			if err := env.Client.Delete(context.Background(), ipBlock(name)); err != nil {
				b.Fatal(err)
			}
			tracker.waitGone(b, name)
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
		before := map[string]int64{}
		for n, a := range agents {
			before[n] = a.Writes()
		}
		ctlBefore := ctl.writes.snapshot()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { // traffic: counters change every 100ms on every node
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for k := 1; ; k++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				for i, n := range names {
					agents[n].SetInterface("lan", fakeagent.Interface{
						TopTalkers: talkers(i, 100),
						Totals:     lanmonitorv1alpha1.TrafficTotals{Packets: int64(k), Bytes: int64(64 * k)},
					})
				}
			}
		})
		time.Sleep(intervals * time.Second)
		close(stop)
		wg.Wait()
		var agentWrites int64
		for n, a := range agents {
			agentWrites += a.Writes() - before[n]
		}
		ctlAfter := ctl.writes.snapshot()
		var ctlWrites int
		for k, v := range ctlAfter {
			ctlWrites += v - ctlBefore[k]
		}
		writes = map[string]float64{
			"agent-writes/node/interval": float64(agentWrites) / (nodes * intervals),
			"controller-writes/interval": float64(ctlWrites) / intervals,
			"writes/node/interval":       float64(int64(ctlWrites)+agentWrites) / (nodes * intervals),
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

	tracker.stop()
	for _, a := range agents {
		a.Stop()
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

// talkers returns n distinct talkers for node i.
func talkers(i, n int) []lanmonitorv1alpha1.Talker {
	out := make([]lanmonitorv1alpha1.Talker, n)
	for j := range out {
		out[j] = lanmonitorv1alpha1.Talker{
			Address:       fmt.Sprintf("2001:db8:%x::%x", i, j+1),
			BitsPerSecond: int64(1_000_000_000 - i*1000 - j), Bytes: 1 << 40, Packets: 1 << 30,
			PacketsPerSecond: 1_000_000, Internal: true,
		}
	}
	return out
}

// appliedTracker watches LanMonitorNode status: which IPBlocks each node
// reports applied.
type appliedTracker struct {
	stop    func()
	mu      sync.Mutex
	changed chan struct{}
	applied map[string]map[string]bool // node -> IPBlock names
}

func trackApplied(b *testing.B) *appliedTracker {
	t := &appliedTracker{changed: make(chan struct{}, 1), applied: map[string]map[string]bool{}}
	t.stop = observe(b, &lanmonitorv1alpha1.LanMonitorNode{}, func(o client.Object) {
		n := o.(*lanmonitorv1alpha1.LanMonitorNode)
		set := map[string]bool{}
		for _, s := range n.Status.IPBlocks {
			set[s.Name] = true
		}
		t.mu.Lock()
		t.applied[n.Name] = set
		t.mu.Unlock()
		select {
		case t.changed <- struct{}{}:
		default:
		}
	})
	return t
}

func (t *appliedTracker) count(block string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := 0
	for _, set := range t.applied {
		if set[block] {
			c++
		}
	}
	return c
}

func (t *appliedTracker) wait(b *testing.B, block string, nodes int) {
	deadline := time.After(30 * time.Second)
	for t.count(block) < nodes {
		select {
		case <-t.changed:
		case <-deadline:
			b.Fatalf("%s applied on %d of %d nodes after 30s", block, t.count(block), nodes)
		}
	}
}

func (t *appliedTracker) waitGone(b *testing.B, block string) {
	deadline := time.After(30 * time.Second)
	for t.count(block) > 0 {
		select {
		case <-t.changed:
		case <-deadline:
			b.Fatalf("%s still applied on %d nodes after 30s", block, t.count(block))
		}
	}
}

package agent

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lanmonitor/lanmonitor/internal/lab"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

// eventStreamWindow is how long each phase of BenchmarkEventStream
// measures (LANMONITOR_BENCH_WINDOW, a Go duration; default 20 s).
func eventStreamWindow(b *testing.B) time.Duration {
	if v := os.Getenv("LANMONITOR_BENCH_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("LANMONITOR_BENCH_WINDOW: %v", err)
		}
		return d
	}
	return 20 * time.Second
}

// BenchmarkEventStream runs the real agent binary with 65,536 tracked
// sources and a 1 s report interval, and measures, over one window without
// dashboard clients and one with 100 clients on GET /api/v1/events:
//
//   - the agent's CPU (utime+stime from /proc/PID/stat), in % of a core;
//   - the mean report duration (reading 65,536 sources, ranking, publishing
//     the event), from lanmonitor_report_duration_seconds, in ms;
//   - its resident memory (VmRSS) at the end of each window, in MiB;
//   - the size of one report event (the history's bytes over its events),
//     in KiB, and the history that ten minutes at 1 s hold, in MiB: it holds
//     the top N of each report, whatever the number of tracked sources.
//
// Every client must receive every event of its window: a client dropped for
// falling behind fails the benchmark.
func BenchmarkEventStream(b *testing.B) {
	_, node, host, pinRoot := benchLAN(b)
	dir := b.TempDir()
	bin := filepath.Join(dir, "lanmonitor-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/lanmonitor-agent").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	file := filepath.Join(dir, "m.yaml")
	os.WriteFile(file, []byte("apiVersion: lanmonitor.io/v1alpha1\nkind: LanMonitor\nmetadata: {name: m}\nspec: {reportInterval: 1s, maxTrackedSources: 131072}\n"), 0o600)
	window := eventStreamWindow(b)
	const api = "http://127.0.0.1:19478"
	for b.Loop() {
		cmd := exec.Command(bin, "standalone", "-i", "lan0", "-f", file, "--netns", node.Path, "--pin-root", pinRoot, "--listen", "127.0.0.1:19478")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := lab.Start(cmd); err != nil {
			b.Fatal(err)
		}
		waitHTTP(b, api+"/readyz", 30*time.Second)
		sendSources(b, host, 65536)
		time.Sleep(2500 * time.Millisecond) // reports of all 65,536 sources
		if n := scrape(b, api, "lanmonitor_tracked_sources"); n != 65536 {
			b.Fatalf("%v tracked sources, want 65536", n)
		}

		for _, clients := range []int{0, 100} {
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			got := make([]atomic.Int64, clients)
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					streamEvents(ctx, api+"/api/v1/events", &got[i])
				}()
			}
			for scrape(b, api, "lanmonitor_dashboard_clients") != float64(clients) {
				time.Sleep(10 * time.Millisecond)
			}
			cpu0, n0, d0 := procCPU(b, cmd.Process.Pid), scrape(b, api, "lanmonitor_report_duration_seconds_count"), scrape(b, api, "lanmonitor_report_duration_seconds_sum")
			t0 := time.Now()
			for i := range got {
				got[i].Store(0)
			}
			time.Sleep(window)
			cpu1, n1, d1 := procCPU(b, cmd.Process.Pid), scrape(b, api, "lanmonitor_report_duration_seconds_count"), scrape(b, api, "lanmonitor_report_duration_seconds_sum")
			elapsed := time.Since(t0)
			rss, _ := procMemory(b, cmd.Process.Pid)
			cancel()
			wg.Wait()
			reports := n1 - n0
			for i := range got {
				// A client may see the window's last event after the scrape.
				if g := float64(got[i].Load()); g < reports-1 || g > reports+1 {
					b.Fatalf("client %d got %v events over %v reports", i, g, reports)
				}
			}
			if d := scrape(b, api, "lanmonitor_dashboard_dropped_clients_total"); d != 0 {
				b.Fatalf("%v clients dropped", d)
			}
			b.ReportMetric((cpu1-cpu0)/elapsed.Seconds()*100, fmt.Sprintf("cpu-%%-%d-clients", clients))
			b.ReportMetric((d1-d0)/reports*1000, fmt.Sprintf("report-ms-%d-clients", clients))
			b.ReportMetric(rss/(1<<20), fmt.Sprintf("MiB-rss-%d-clients", clients))
		}
		perEvent := scrape(b, api, "lanmonitor_dashboard_history_bytes") / scrape(b, api, "lanmonitor_dashboard_history_events")
		b.ReportMetric(perEvent/1024, "KiB-per-event")
		b.ReportMetric(perEvent*600/(1<<20), "MiB-history-10min")
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
}

// streamEvents reads the event stream at url until ctx ends, counting its
// events (data lines) in n.
func streamEvents(ctx context.Context, url string, n *atomic.Int64) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") {
			n.Add(1)
		}
	}
}

// scrape reads the value of the metric family named name (the sample of
// interface lan0; for a summary name_sum or name_count) from the agent's
// /metrics.
func scrape(b *testing.B, api, name string) float64 {
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	family, suffix := name, ""
	for _, s := range []string{"_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, s); ok && families[name] == nil {
			family, suffix = base, s
		}
	}
	f := families[family]
	if f == nil || len(f.Metric) == 0 {
		b.Fatalf("/metrics has no %s", name)
	}
	m := f.Metric[0]
	switch {
	case suffix == "_sum":
		return m.GetSummary().GetSampleSum()
	case suffix == "_count":
		return float64(m.GetSummary().GetSampleCount())
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}

// procCPU reads the user+system CPU time pid has used, in seconds.
func procCPU(b *testing.B, pid int) float64 {
	cpu, err := testenv.ProcessCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return cpu
}

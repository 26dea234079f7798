package webui_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/heapprofiler"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/chromedp"

	"github.com/lanmonitor/lanmonitor/internal/browsertest"
	"github.com/lanmonitor/lanmonitor/internal/sse"
	"github.com/lanmonitor/lanmonitor/internal/webui"
)

// soakDuration is how long BenchmarkDashboardSoak keeps the page open:
// $LANMONITOR_BENCH_SOAK (a Go duration), default 10 minutes.
func soakDuration(b *testing.B) time.Duration {
	if s := os.Getenv("LANMONITOR_BENCH_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("LANMONITOR_BENCH_SOAK: %v", err)
		}
		return d
	}
	return 10 * time.Minute
}

// BenchmarkDashboardSoak keeps the agent's page open in headless Chromium
// for LANMONITOR_BENCH_SOAK (10 minutes) at a 1 s report interval, after a
// full ten-minute history, with 65,536 tracked sources and a top 10 whose
// addresses change every report (so rows, sparklines and talker histories
// come and go). It reports the JS heap growth between the start and the
// end, each after a forced garbage collection (DevTools HeapProfiler), and
// the page's CPU: main-thread task time per second of wall time
// (DevTools Performance metrics TaskDuration). Targets: heap growth under
// 20 MB, CPU under 5% of a core.
func BenchmarkDashboardSoak(b *testing.B) {
	soak := soakDuration(b)
	for b.Loop() {
		br := browsertest.New(b)
		hub := sse.NewHub(sse.Options{MaxAge: 10 * time.Minute})
		start := time.Now().Add(-time.Second)
		event := func(at time.Time, i int) any {
			ev := reportEvent(at, i)
			ev.Totals.TrackedSources = 65536
			for k := range ev.TopTalkers {
				// A new top 10 every report.
				ev.TopTalkers[k].Address = fmt.Sprintf("198.18.%d.%d", (i/25)%256, (i*10+k)%250+1)
			}
			return ev
		}
		for i := range 600 {
			at := start.Add(time.Duration(i-599) * time.Second)
			if _, err := hub.Publish(at, event(at, i+1)); err != nil {
				b.Fatal(err)
			}
		}
		srv := serve(b, webui.Agent(), hub)
		br.Navigate(srv.URL + "/")
		br.WaitText("#conn", "live", 10*time.Second)
		ctx := br.Context()
		metrics := func() (heap, task float64) {
			if _, err := chromedp.Call(ctx, heapprofiler.CollectGarbage, cdp.Empty{}); err != nil {
				b.Fatal(err)
			}
			res, err := chromedp.Call(ctx, performance.GetMetrics, cdp.Empty{})
			if err != nil {
				b.Fatal(err)
			}
			for _, m := range res.Metrics {
				switch m.Name {
				case "JSHeapUsedSize":
					heap = m.Value
				case "TaskDuration":
					task = m.Value
				}
			}
			return heap, task
		}
		if _, err := chromedp.Call(ctx, performance.Enable, performance.EnableParams{}); err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for i := 601; ; i++ {
				select {
				case <-done:
					return
				case now := <-tick.C:
					hub.Publish(now, event(now, i))
				}
			}
		}()
		time.Sleep(5 * time.Second) // the first live events drawn
		heap0, task0 := metrics()
		t0 := time.Now()
		time.Sleep(soak)
		heap1, task1 := metrics()
		elapsed := time.Since(t0)
		close(done)
		if got := br.Text("#conn"); got != "live" {
			b.Fatalf("stream %q after %v", got, soak)
		}
		b.ReportMetric((heap1-heap0)/(1<<20), "MiB-heap-growth")
		b.ReportMetric(heap1/(1<<20), "MiB-heap-end")
		b.ReportMetric((task1-task0)/elapsed.Seconds()*100, "cpu-%-page")
	}
}

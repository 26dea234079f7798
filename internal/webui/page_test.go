package webui_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lanmonitor/lanmonitor/agent"
	"github.com/lanmonitor/lanmonitor/internal/browsertest"
	"github.com/lanmonitor/lanmonitor/internal/sse"
	"github.com/lanmonitor/lanmonitor/internal/webui"
)

// serve is a server of a dashboard page and the API it reads: history and
// events from hub, as the agent and the controller serve them.
func serve(t *testing.T, page http.Handler, hub *sse.Hub) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /", page)
	mux.Handle("GET /api/v1/history", webui.Compress(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := hub.ServeHistory(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})))
	mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, r *http.Request) {
		if err := hub.ServeEvents(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("GET /api/v1/interfaces", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(agent.InterfacesResponse{Interfaces: []agent.InterfaceJSON{{Name: "lan0", CurrentName: "lan0", State: agent.StateAttached}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { hub.Close(); srv.Close() })
	return srv
}

// reportEvent is a report of a busy interface at t, the i-th of a run:
// ten talkers (IPv4 and IPv6, internal and external) and two IPBlocks, as
// large as the agent's events get with the default top 10.
func reportEvent(t time.Time, i int) agent.ReportEvent {
	ev := agent.ReportEvent{
		Time: t, Node: "node1", Interface: "lan0", Ifindex: 2, State: agent.StateAttached,
		XDPMode: agent.XDPModeNative, Promiscuous: true, ReportIntervalSeconds: 1, ElapsedSeconds: 1,
		Totals: agent.StatsResponse{
			Packets: uint64(1000 * i), Bytes: uint64(600_000 * i), Passed: uint64(990 * i), Dropped: uint64(10 * i),
			IPv4: uint64(900 * i), IPv6: uint64(100 * i), Local: uint64(700 * i), Snooped: uint64(300 * i),
			TrackedSources: 12, TrackedSourcesCapacity: 65536,
		},
		Rates: agent.EventRates{
			BitsPerSecond: 4_800_000 + uint64(i%60)*20_000, PacketsPerSecond: 1000,
			InternalBitsPerSecond: 4_000_000, InternalPacketsPerSecond: 800, ExternalBitsPerSecond: 800_000, ExternalPacketsPerSecond: 200,
			LocalPacketsPerSecond: 700, SnoopedPacketsPerSecond: 300, DroppedPacketsPerSecond: 10,
		},
		Rules: []agent.EventRule{
			{Name: "noisy-hosts", Generation: 1, Direction: agent.DirectionSource, Mode: agent.BlockModeEnforce, CIDRCount: 2,
				CIDRs: []string{"198.18.0.66/32", "2001:db8::66/128"}, MatchedPackets: uint64(10 * i), DroppedPackets: uint64(10 * i),
				MatchedPacketsPerSecond: 10, DroppedPacketsPerSecond: 10, ExemptedAddresses: []string{}},
			{Name: "watch-list", Generation: 3, Direction: agent.DirectionSource, Mode: agent.BlockModeAudit, CIDRCount: 1,
				CIDRs: []string{"198.19.0.0/16"}, MatchedPackets: uint64(200 * i), MatchedPacketsPerSecond: 200, ExemptedAddresses: []string{"198.19.0.1"}},
		},
	}
	for k := range 10 {
		addr := fmt.Sprintf("198.18.0.%d", 20+k)
		internal := true
		switch {
		case k >= 8:
			addr = fmt.Sprintf("2001:db8::%x", 0x20+k)
		case k >= 6:
			addr, internal = fmt.Sprintf("198.19.0.%d", k), false
		}
		pps := uint64(100 - 9*k)
		ev.TopTalkers = append(ev.TopTalkers, agent.TalkerJSON{
			Address: addr, Internal: internal, Packets: pps * uint64(i), Bytes: 600 * pps * uint64(i),
			LocalPackets: pps * uint64(i) * 7 / 10, SnoopedPackets: pps*uint64(i) - pps*uint64(i)*7/10,
			BitsPerSecond: 4800 * pps, PacketsPerSecond: pps,
		})
	}
	return ev
}

// TestAgentPageFullHistory: the agent's page opened with ten minutes of
// history at a 1 s report interval (600 reports) draws all of them, then
// follows the live stream. It measures the first paint and the page's
// transfer size.
func TestAgentPageFullHistory(t *testing.T) {
	b := browsertest.New(t)
	hub := sse.NewHub(sse.Options{MaxAge: 10 * time.Minute})
	now := time.Now().Add(-time.Second)
	for i := range 600 {
		at := now.Add(time.Duration(i-599) * time.Second)
		if _, err := hub.Publish(at, reportEvent(at, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	srv := serve(t, webui.Agent(), hub)
	b.Navigate(srv.URL + "/")
	b.WaitText("#conn", "live", 10*time.Second)
	b.Wait(`document.body.dataset.firstPaintMs !== undefined`, 5*time.Second)
	fcp := browsertest.Eval[float64](b, `(performance.getEntriesByName("first-contentful-paint")[0] || {startTime: -1}).startTime`)
	drawn := browsertest.Eval[float64](b, `performance.getEntriesByName("lm-first-paint")[0].startTime`)
	t.Logf("first contentful paint %.0f ms, 600 reports drawn at %.0f ms after navigation start", fcp, drawn)
	if got := b.Attr("#chart-bits", "data-points"); got != "300" {
		t.Errorf("bits chart: %s points for the 5 min window, want 300", got)
	}
	if got := b.Attr("#chart-packets", "data-points"); got != "300" {
		t.Errorf("packets chart: %s points, want 300", got)
	}
	b.Select("#window", "600")
	b.Wait(`document.querySelector("#chart-bits").dataset.points === "600"`, 5*time.Second)
	b.Select("#window", "60")
	b.Wait(`document.querySelector("#chart-bits").dataset.points === "60"`, 5*time.Second)
	if got := b.Text("#events-received"); got != "600" {
		t.Errorf("events received %q, want 600", got)
	}

	// Live: one more report shows without a reload.
	at := time.Now()
	if _, err := hub.Publish(at, reportEvent(at, 601)); err != nil {
		t.Fatal(err)
	}
	b.WaitText(`#talkers tbody tr[data-addr="198.18.0.20"] td[data-col="packets"]`, "60,100", 5*time.Second)
	b.WaitText("#events-received", "601", 5*time.Second)
	lat := browsertest.Eval[float64](b, `(r => r.arrivedMs - r.id)(window.lmReceived[window.lmReceived.length - 1])`)
	t.Logf("event %d ms after its time", int(lat))

	var page, api float64
	for _, r := range b.Resources() {
		if !strings.HasPrefix(r.URL, srv.URL+"/") {
			t.Errorf("the page loaded %s, not from its server", r.URL)
		}
		if strings.Contains(r.URL, "/api/") {
			api += r.TransferSize
		} else {
			page += r.TransferSize
		}
	}
	t.Logf("transferred: the page and its files %.1f KiB (compressed, with headers), the API %.1f KiB", page/1024, api/1024)
	if msgs := b.Messages(); len(msgs) > 0 {
		t.Errorf("console: %q", msgs)
	}
}

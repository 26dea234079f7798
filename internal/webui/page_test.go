package webui_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
func serve(t testing.TB, page http.Handler, hub *sse.Hub) *httptest.Server {
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
	// First in a browser that has shown no page yet, then again (a reload
	// with the files cached, as a returning user has them).
	var firstLoad []browsertest.Resource
	for _, load := range []string{"first load", "reload"} {
		b.Navigate(srv.URL + "/")
		b.WaitText("#conn", "live", 10*time.Second)
		b.Wait(`performance.getEntriesByName("lm-first-paint").length > 0`, 5*time.Second)
		m := browsertest.Eval[map[string]float64](b, `({
			fcp: performance.getEntriesByName("first-contentful-paint")[0].startTime,
			history: performance.getEntriesByType("resource").find(e => e.name.includes("/api/v1/history")).responseEnd,
			drawn: performance.getEntriesByName("lm-first-paint")[0].startTime,
		})`)
		if firstLoad == nil {
			firstLoad = b.Resources()
		}
		t.Logf("%s: first contentful paint %.0f ms, history (600 reports) received %.0f ms, drawn %.0f ms after navigation start", load, m["fcp"], m["history"], m["drawn"])
	}
	if got := b.Attr("#chart-bits", "data-points"); got != "300" {
		t.Errorf("bits chart: %s points for the 5 min window, want 300", got)
	}
	if got := b.Attr("#chart-packets", "data-points"); got != "300" {
		t.Errorf("packets chart: %s points, want 300", got)
	}
	b.Select("#window", "600")
	b.WaitAttr("#chart-bits", "data-points", "600", 5*time.Second)
	b.Select("#window", "60")
	b.WaitAttr("#chart-bits", "data-points", "60", 5*time.Second)
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
	for _, r := range firstLoad {
		if !strings.HasPrefix(r.URL, srv.URL+"/") {
			t.Errorf("the page loaded %s, not from its server", r.URL)
		}
		if strings.Contains(r.URL, "/api/") {
			api += r.TransferSize
		} else {
			page += r.TransferSize
		}
	}
	t.Logf("first load transferred: the page and its files %.1f KiB (compressed, with headers), the API %.1f KiB", page/1024, api/1024)
	if page > 150<<10 {
		t.Errorf("the page and its files transferred %.0f bytes, over the budget of 150 KiB", page)
	}
	if msgs := b.Messages(); len(msgs) > 0 {
		t.Errorf("console: %q", msgs)
	}
}

// clusterEvent is the controller's roll-up as the cluster page reads it
// (the fields listed in static/cluster.js).
type clusterEvent struct {
	Time   time.Time     `json:"time"`
	Nodes  []clusterNode `json:"nodes"`
	Totals struct {
		BitsPerSecond    uint64 `json:"bitsPerSecond"`
		PacketsPerSecond uint64 `json:"packetsPerSecond"`
		DroppedPackets   uint64 `json:"droppedPackets"`
	} `json:"totals"`
	TopTalkers  []clusterTalker  `json:"topTalkers"`
	IPBlocks    []clusterBlock   `json:"ipBlocks"`
	LanMonitors []clusterMonitor `json:"lanMonitors"`
}

type clusterRates struct {
	BitsPerSecond    uint64 `json:"bitsPerSecond"`
	PacketsPerSecond uint64 `json:"packetsPerSecond"`
}

type clusterNode struct {
	Node                 string       `json:"node"`
	Attached             bool         `json:"attached"`
	XDPMode              string       `json:"xdpMode"`
	Rates                clusterRates `json:"rates"`
	TopTalker            string       `json:"topTalker"`
	TrackedSources       int          `json:"trackedSources"`
	Capacity             int          `json:"capacity"`
	LastReportAgeSeconds float64      `json:"lastReportAgeSeconds"`
}

type clusterTalker struct {
	agent.TalkerJSON
	Node string `json:"node"`
}

type clusterBlock struct {
	Name           string            `json:"name"`
	Mode           string            `json:"mode"`
	Enforced       int               `json:"enforced"`
	CIDRCount      int               `json:"cidrCount"`
	DroppedPackets uint64            `json:"droppedPackets"`
	PerNode        []clusterEnforced `json:"perNode"`
}

type clusterEnforced struct {
	Node           string `json:"node"`
	Enforced       bool   `json:"enforced"`
	Generation     int64  `json:"generation"`
	DroppedPackets uint64 `json:"droppedPackets"`
}

type clusterMonitor struct {
	Name       string `json:"name"`
	Conditions []struct {
		Type    string `json:"type"`
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"conditions"`
}

// rollup is the i-th roll-up of three nodes, node3 not attached.
func rollup(t time.Time, i int) clusterEvent {
	ev := clusterEvent{Time: t}
	for k, name := range []string{"node1", "node2", "node3"} {
		n := clusterNode{Node: name, Attached: k < 2, XDPMode: "Native", TopTalker: "198.18.0.21", TrackedSources: 9, Capacity: 65536, LastReportAgeSeconds: 0.4}
		if n.Attached {
			n.Rates = clusterRates{BitsPerSecond: 10_700_000 + uint64(i%20)*50_000, PacketsPerSecond: 1400}
			ev.Totals.BitsPerSecond += n.Rates.BitsPerSecond
			ev.Totals.PacketsPerSecond += n.Rates.PacketsPerSecond
		} else {
			n.XDPMode, n.TopTalker, n.TrackedSources, n.LastReportAgeSeconds = "", "", 0, 75
		}
		ev.Nodes = append(ev.Nodes, n)
	}
	for k, addr := range []string{"198.18.0.21", "198.18.0.22", "2001:db8::22", "198.19.0.7"} {
		pps := uint64(1000 / (k + 1))
		ev.TopTalkers = append(ev.TopTalkers, clusterTalker{TalkerJSON: agent.TalkerJSON{
			Address: addr, Internal: k < 3, Packets: pps * uint64(i), Bytes: 1042 * pps * uint64(i), BitsPerSecond: 8 * 1042 * pps, PacketsPerSecond: pps,
		}, Node: fmt.Sprintf("node%d", k%2+1)})
	}
	b := clusterBlock{Name: "noisy-hosts", Mode: "Enforce", Enforced: 2, CIDRCount: 2}
	for k, name := range []string{"node1", "node2", "node3"} {
		p := clusterEnforced{Node: name, Enforced: k < 2, Generation: 1}
		if p.Enforced {
			p.DroppedPackets = uint64(10 * i * (k + 1))
		}
		b.DroppedPackets += p.DroppedPackets
		b.PerNode = append(b.PerNode, p)
	}
	ev.IPBlocks = []clusterBlock{b}
	ev.Totals.DroppedPackets = b.DroppedPackets
	m := clusterMonitor{Name: "lan"}
	m.Conditions = append(m.Conditions, struct {
		Type    string `json:"type"`
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}{"Ready", "False", "NodesNotReady", "2 of 3 nodes attached: node3: interface lan0 not found"})
	ev.LanMonitors = []clusterMonitor{m}
	return ev
}

// TestClusterPage: the controller's page draws the cluster roll-ups of
// its history, then follows the stream.
func TestClusterPage(t *testing.T) {
	b := browsertest.New(t)
	hub := sse.NewHub(sse.Options{MaxAge: 10 * time.Minute})
	now := time.Now().Add(-time.Second)
	for i := range 40 {
		at := now.Add(time.Duration(i-39) * time.Second)
		if _, err := hub.Publish(at, rollup(at, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	srv := serve(t, webui.Cluster(), hub)
	b.Navigate(srv.URL + "/")
	b.WaitText("#conn", "live", 10*time.Second)
	b.WaitText("#events-received", "40", 5*time.Second)
	for sel, want := range map[string]string{
		"#nodes-ready":                     "2 of 3",
		"#rate-bits":                       "21.4 Mbit/s", // 2 · 10.7 Mbit/s
		"#dropped":                         "1,200",       // 10·40 + 20·40
		"#tracked":                         "18 on 3 nodes",
		"#talkers tbody tr:first-child th": "198.18.0.21",
		`#talkers tbody tr[data-addr="198.18.0.21"] td[data-col="packets"]`:        "40,000",
		`#talkers tbody tr[data-addr="198.18.0.21"] td[data-col="node"]`:           "node1",
		`#talkers tbody tr[data-addr="198.19.0.7"] td[data-col="kind"]`:            "external",
		`#nodes tbody tr[data-node="node3"] td[data-col="attached"]`:               "no",
		`#nodes tbody tr[data-node="node3"] td[data-col="lastReport"]`:             "1 min 15 s ago",
		`#nodes tbody tr[data-node="node1"] td[data-col="trackedSources"]`:         "9 of 65,536",
		`#blocks tbody tr[data-block="noisy-hosts"] td[data-col="enforced"]`:       "2 of 3",
		`#blocks tbody tr[data-block="noisy-hosts"] td[data-col="droppedPackets"]`: "1,200",
		`#enforcement tbody tr[data-node="node2"] td[data-col="droppedPackets"]`:   "800",
		`#enforcement tbody tr[data-node="node3"] td[data-col="enforced"]`:         "no",
		`#monitors tbody tr[data-monitor="lan"] li[data-type="Ready"]`:             "Ready: False (NodesNotReady) 2 of 3 nodes attached: node3: interface lan0 not found",
	} {
		if got := b.Text(sel); got != want {
			t.Errorf("%s: %q, want %q", sel, got, want)
		}
	}
	if got := b.Attr("#chart-bits", "data-points"); got != "40" {
		t.Errorf("bits chart: %s points, want 40", got)
	}
	at := time.Now()
	if _, err := hub.Publish(at, rollup(at, 41)); err != nil {
		t.Fatal(err)
	}
	b.WaitText(`#talkers tbody tr[data-addr="198.18.0.21"] td[data-col="packets"]`, "41,000", 5*time.Second)
	b.WaitText("#events-received", "41", 5*time.Second)
	if shots := os.Getenv("LANMONITOR_SCREENSHOTS"); shots != "" {
		b.Screenshot(filepath.Join(shots, "cluster.png"))
	}
	if msgs := b.Messages(); len(msgs) > 0 {
		t.Errorf("console: %q", msgs)
	}
}

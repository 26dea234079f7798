package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lanmonitor/lanmonitor/agent/kernel/fake"
	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/controllers"
	"github.com/lanmonitor/lanmonitor/internal/sse"
)

// TestDashboard: three real agents (on fake kernels, one fake clock) on the
// real API server report talkers, rates and block counters; the cluster dashboard's event has the
// exact per-node rows, totals, merged top talkers and per-node enforcement,
// over HTTP too, and bad requests get clear 4xx answers.
func TestDashboard(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	createNodes(t, node{name: "node-a", labels: map[string]string{"zone": "a"}}, node{name: "node-b"}, node{name: "node-c"})
	startController(t, false)
	m := monitor("lan", time.Second)
	m.Spec.InternalCIDRs = []string{"198.18.0.0/16"}
	zoneA := ipBlock("zone-a", "2001:db8:bad::/48")
	zoneA.Spec.Mode = lanmonitorv1alpha1.BlockModeAudit
	zoneA.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"zone": "a"}}
	create(t, m, ipBlock("scanners", "198.19.0.0/16", "198.19.1.0/24"), zoneA)
	clk := clocktesting.NewFakeClock(time.Now())
	agents := startAgents(t, agentOptions{clock: clk, setup: func(node string, k *fake.Kernel) {
		if node == "node-b" {
			k.RefuseNative() // Auto falls back to generic
		}
	}}, "node-a", "node-b", "node-c")
	waitEnforced(t, "scanners", 3)
	waitEnforced(t, "zone-a", 1)

	// One report interval of traffic (1 s on the agents' clock): rates are
	// bytes x 8 and frames per second. 198.19.0.5 and 198.19.1.1 are in
	// scanners: their frames for the node are dropped, the snooped ones
	// only matched; 2001:db8:bad::1 is in zone-a (Audit: matched).
	addr := netip.MustParseAddr
	node := addr("198.18.255.1")
	agents["node-a"].receive(t,
		fake.Frame{Src: addr("198.18.0.10"), Dst: node, Packets: 3000, Bytes: 3_750_000}, // 30 Mbit/s
		fake.Frame{Src: addr("198.19.0.5"), Dst: node, Packets: 7, Bytes: 1_000_000},     // dropped
		fake.Frame{Src: addr("198.19.0.5"), Dst: addr("198.18.255.2"), Packets: 2, Bytes: 250_000, Snooped: true},
		fake.Frame{Src: addr("2001:db8:bad::1"), Dst: addr("2001:db8::1"), Packets: 3, Bytes: 300}) // audited
	agents["node-b"].receive(t,
		fake.Frame{Src: addr("198.18.0.10"), Dst: node, Packets: 4000, Bytes: 5_000_000}, // 40 Mbit/s
		fake.Frame{Src: addr("198.18.0.20"), Dst: node, Packets: 500, Bytes: 625_000},    // 5 Mbit/s
		fake.Frame{Src: addr("198.19.1.1"), Dst: node, Packets: 11, Bytes: 704})          // dropped
	for _, a := range agents {
		a.datapath(t) // every Manager runs, so its report ticker waits on the clock
	}
	eventually(t, 10*time.Second, func() error {
		if w := clk.Waiters(); w != 3 {
			return fmt.Errorf("%d report tickers", w)
		}
		return nil
	})
	clk.Step(time.Second)
	// node-c loses its interface: not attached, enforcing nothing.
	agents["node-c"].Kernel.DeleteInterface("lan0")

	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	d := controllers.NewDashboard(env.Client, time.Hour)
	d.SetClock(func() time.Time { return at })
	capacity := int64(lanmonitorv1alpha1.DefaultMaxTrackedSources)
	want := controllers.ClusterEvent{
		Time: at,
		Nodes: []controllers.DashboardNode{
			{Node: "node-a", Attached: true, XDPMode: lanmonitorv1alpha1.XDPModeNative, Rates: controllers.DashboardRates{BitsPerSecond: 40_002_400, PacketsPerSecond: 3012},
				TopTalker: &controllers.DashboardTalker{Address: "198.18.0.10", BitsPerSecond: 30_000_000}, TrackedSources: 3, Capacity: capacity},
			{Node: "node-b", Attached: true, XDPMode: lanmonitorv1alpha1.XDPModeGeneric, Rates: controllers.DashboardRates{BitsPerSecond: 45_005_632, PacketsPerSecond: 4511},
				TopTalker: &controllers.DashboardTalker{Address: "198.18.0.10", BitsPerSecond: 40_000_000}, TrackedSources: 3, Capacity: capacity},
			{Node: "node-c", Attached: false, Capacity: capacity},
		},
		Totals: controllers.ClusterTotals{BitsPerSecond: 85_008_032, PacketsPerSecond: 7523, DroppedPackets: 18},
		TopTalkers: []lanmonitorv1alpha1.Talker{
			{Address: "198.18.0.10", Internal: true, BitsPerSecond: 40_000_000, PacketsPerSecond: 4000, Bytes: 5_000_000, Packets: 4000, Node: "node-b"},
			{Address: "198.19.0.5", BitsPerSecond: 10_000_000, PacketsPerSecond: 9, Bytes: 1_250_000, Packets: 9, Node: "node-a"},
			{Address: "198.18.0.20", Internal: true, BitsPerSecond: 5_000_000, PacketsPerSecond: 500, Bytes: 625_000, Packets: 500, Node: "node-b"},
			{Address: "198.19.1.1", BitsPerSecond: 5632, PacketsPerSecond: 11, Bytes: 704, Packets: 11, Node: "node-b"},
			{Address: "2001:db8:bad::1", BitsPerSecond: 2400, PacketsPerSecond: 3, Bytes: 300, Packets: 3, Node: "node-a"},
		},
		IPBlocks: []controllers.DashboardIPBlock{
			{Name: "scanners", Mode: lanmonitorv1alpha1.BlockModeEnforce, CIDRCount: 2, Enforced: 2, DroppedPackets: 18, PerNode: []controllers.BlockOnNode{
				{Node: "node-a", Enforced: true, Generation: 1, DroppedPackets: 7},
				{Node: "node-b", Enforced: true, Generation: 1, DroppedPackets: 11},
				{Node: "node-c"},
			}},
			{Name: "zone-a", Mode: lanmonitorv1alpha1.BlockModeAudit, CIDRCount: 1, Enforced: 1, PerNode: []controllers.BlockOnNode{
				{Node: "node-a", Enforced: true, Generation: 1},
			}},
		},
	}
	var got controllers.ClusterEvent
	eventually(t, 20*time.Second, func() error {
		var err error
		if got, err = d.Event(context.Background()); err != nil {
			return err
		}
		for i, n := range got.Nodes {
			// The agents stamp their reports with the real time.
			if n.LastReportAgeSeconds == nil {
				return fmt.Errorf("%s: no report age", n.Node)
			}
			got.Nodes[i].LastReportAgeSeconds = nil
		}
		if len(got.LanMonitors) != 1 || got.LanMonitors[0].Name != "lan" {
			return fmt.Errorf("lanMonitors %+v", got.LanMonitors)
		}
		lan := got.LanMonitors[0]
		got.LanMonitors = nil
		want.LanMonitors = nil
		if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
			return fmt.Errorf("event\n got %s\nwant %s", g, w)
		}
		if c := findCondition(lan.Conditions, lanmonitorv1alpha1.ConditionReady); c == nil || c.Message != "attached on 2 of 3 nodes" {
			return fmt.Errorf("LanMonitor conditions %+v", lan.Conditions)
		}
		return nil
	})

	// The same over HTTP: history, then the stream from its lastId.
	if err := d.Publish(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	get := func(path string, hdr ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		for i := 0; i+1 < len(hdr) && hdr[i] != ""; i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/api/v1/history")
	var hist sse.HistoryResponse
	if code != http.StatusOK || json.Unmarshal([]byte(body), &hist) != nil || len(hist.Events) != 1 {
		t.Fatalf("history: %d %s", code, body)
	}
	var fromHTTP controllers.ClusterEvent
	if err := json.Unmarshal(hist.Events[0].Data, &fromHTTP); err != nil {
		t.Fatal(err)
	}
	if fromHTTP.Totals != want.Totals || len(fromHTTP.Nodes) != 3 || fromHTTP.IPBlocks[0].PerNode[1] != want.IPBlocks[0].PerNode[1] {
		t.Fatalf("history event %+v", fromHTTP)
	}
	if code, body := get("/"); code != http.StatusOK || !strings.Contains(body, "cluster.js") {
		t.Fatalf("page: %d %.200s", code, body)
	}

	// A stream client replayed from ID 0 (Last-Event-ID) gets the event.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/events", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req = req.WithContext(ctx)
	req.Header.Set("Last-Event-ID", fmt.Sprint(hist.Events[0].ID-1))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	var stream strings.Builder
	for !strings.Contains(stream.String(), "\n\n"+"id: ") {
		n, err := resp.Body.Read(buf)
		stream.Write(buf[:n])
		if err != nil {
			t.Fatalf("stream: %v after %q", err, stream.String())
		}
	}
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" || !strings.Contains(stream.String(), fmt.Sprintf("id: %d\n", hist.Events[0].ID)) {
		t.Fatalf("stream %q", stream.String())
	}

	for _, c := range []struct {
		path, header, value string
		code                int
		message             string
	}{
		{"/api/v1/events?interface=lan0", "", "", 400, `unknown query parameter \"interface\"`},
		{"/api/v1/history?limit=1000000", "", "", 400, "limit"},
		{"/api/v1/history?since=-1", "", "", 400, "since"},
		{"/api/v1/events", "Last-Event-ID", "yesterday", 400, "Last-Event-ID"},
		{"/nope", "", "", 404, ""},
	} {
		code, body := get(c.path, c.header, c.value)
		if code != c.code || !strings.Contains(body, c.message) {
			t.Errorf("GET %s (%s: %s): %d %s, want %d naming %s", c.path, c.header, c.value, code, body, c.code, c.message)
		}
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

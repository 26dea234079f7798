package controllers

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/internal/sse"
	"github.com/lanmonitor/lanmonitor/internal/webui"
)

// ClusterEvent is the cluster-wide roll-up the controller's dashboard
// streams (GET /api/v1/events) and keeps (GET /api/v1/history): one per
// dashboard interval, read from the controller's cache of LanMonitorNodes,
// IPBlocks and LanMonitors. Rates are bits per second and packets per
// second over each node's last report interval; counters are packets and
// bytes, cumulative as the nodes report them.
type ClusterEvent struct {
	// Time is when the roll-up was made (RFC 3339, wall clock).
	Time time.Time `json:"time"`
	// Nodes is one row per LanMonitorNode, by name.
	Nodes []DashboardNode `json:"nodes"`
	// Totals add up the nodes' rates and the blocks' drops.
	Totals ClusterTotals `json:"totals"`
	// TopTalkers are the cluster's top talkers, merged from the nodes'
	// lists as LanMonitor status merges them (mergeTalkers: the numbers of
	// the node that saw the address most, named in node).
	TopTalkers []lanmonitorv1alpha1.Talker `json:"topTalkers"`
	// IPBlocks is one row per IPBlock, by name.
	IPBlocks []DashboardIPBlock `json:"ipBlocks"`
	// LanMonitors is one row per LanMonitor, by name, with its conditions.
	LanMonitors []DashboardMonitor `json:"lanMonitors"`
}

// DashboardNode is one node's row: its interfaces added up.
type DashboardNode struct {
	Node string `json:"node"`
	// Attached is true when every interface of the node's spec reports
	// attached (and there is at least one).
	Attached bool `json:"attached"`
	// XDPMode is the first interface's attach mode.
	XDPMode lanmonitorv1alpha1.XDPMode `json:"xdpMode,omitempty"`
	// Rates are the sum over the node's interfaces.
	Rates DashboardRates `json:"rates"`
	// TopTalker is the node's highest talker over all its interfaces (nil: none).
	TopTalker *DashboardTalker `json:"topTalker,omitempty"`
	// TrackedSources and Capacity are the talker tables' entries and
	// capacity, summed over the interfaces (entries).
	TrackedSources int64 `json:"trackedSources"`
	Capacity       int64 `json:"capacity"`
	// LastReportAgeSeconds is how long ago the agent last read its
	// counters (seconds), nil when it never reported.
	LastReportAgeSeconds *float64 `json:"lastReportAgeSeconds"`
}

// DashboardRates are bits per second and packets per second.
type DashboardRates struct {
	BitsPerSecond    int64 `json:"bitsPerSecond"`
	PacketsPerSecond int64 `json:"packetsPerSecond"`
}

// DashboardTalker is a node's top talker: its address and rate (bits per second).
type DashboardTalker struct {
	Address       string `json:"address"`
	BitsPerSecond int64  `json:"bitsPerSecond"`
}

// ClusterTotals are the cluster's rates (bits and packets per second,
// summed over the nodes) and the packets every block dropped (summed over
// the nodes' reports of the blocks' current rule IDs).
type ClusterTotals struct {
	BitsPerSecond    int64 `json:"bitsPerSecond"`
	PacketsPerSecond int64 `json:"packetsPerSecond"`
	DroppedPackets   int64 `json:"droppedPackets"`
}

// DashboardIPBlock is one IPBlock's row.
type DashboardIPBlock struct {
	Name      string                       `json:"name"`
	Mode      lanmonitorv1alpha1.BlockMode `json:"mode"`
	CIDRCount int                          `json:"cidrCount"`
	// Enforced is how many of the nodes in PerNode enforce the current
	// generation.
	Enforced int `json:"enforced"`
	// DroppedPackets is the sum of PerNode's (packets).
	DroppedPackets int64 `json:"droppedPackets"`
	// PerNode lists every node whose spec carries the block, by name.
	PerNode []BlockOnNode `json:"perNode"`
}

// BlockOnNode is one IPBlock on one node.
type BlockOnNode struct {
	Node string `json:"node"`
	// Enforced is true when the node reports the block's current rule ID
	// and metadata.generation applied (IPBlock status counts it the same).
	Enforced bool `json:"enforced"`
	// Generation is the generation the node reports applied (0: none yet).
	Generation int64 `json:"generation"`
	// DroppedPackets is the node's drop counter for the current rule ID (packets).
	DroppedPackets int64 `json:"droppedPackets"`
}

// DashboardMonitor is one LanMonitor's row.
type DashboardMonitor struct {
	Name       string             `json:"name"`
	Conditions []metav1.Condition `json:"conditions"`
}

// Dashboard serves the cluster-wide dashboard: every interval it rolls the
// cache up into a ClusterEvent and publishes it to the page's clients.
// It only reads, so it runs on every replica (not only the leader).
type Dashboard struct {
	reader   client.Reader
	interval time.Duration
	hub      *sse.Hub
	now      func() time.Time
}

// DefaultDashboardInterval is how often the dashboard rolls up by default.
const DefaultDashboardInterval = 5 * time.Second

// dashboardTopTalkers is how many cluster top talkers an event carries.
const dashboardTopTalkers = 20

// NewDashboard returns a dashboard reading r (the manager's cache) every
// interval (<= 0: DefaultDashboardInterval), keeping ten minutes of events.
func NewDashboard(r client.Reader, interval time.Duration) *Dashboard {
	if interval <= 0 {
		interval = DefaultDashboardInterval
	}
	return &Dashboard{reader: r, interval: interval, now: time.Now,
		hub: sse.NewHub(sse.Options{MaxAge: 10 * time.Minute})}
}

// NeedLeaderElection is false: every replica serves the dashboard.
func (d *Dashboard) NeedLeaderElection() bool { return false }

// Start publishes an event every interval until ctx ends (manager.Runnable).
// A failed roll-up (cache not synced yet) is logged and retried next tick.
func (d *Dashboard) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("dashboard")
	t := time.NewTicker(d.interval)
	defer t.Stop()
	defer d.hub.Close()
	for {
		if err := d.Publish(ctx); err != nil {
			log.Error(err, "roll up the dashboard event")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Publish rolls up one event and sends it to the clients.
func (d *Dashboard) Publish(ctx context.Context) error {
	ev, err := d.Event(ctx)
	if err != nil {
		return err
	}
	_, err = d.hub.Publish(ev.Time, ev)
	return err
}

// Event rolls the reader's LanMonitorNodes, IPBlocks, LanMonitors and Nodes
// up into one ClusterEvent. Errors: those of the List calls.
func (d *Dashboard) Event(ctx context.Context) (ClusterEvent, error) {
	var (
		lmns     lanmonitorv1alpha1.LanMonitorNodeList
		blocks   lanmonitorv1alpha1.IPBlockList
		monitors lanmonitorv1alpha1.LanMonitorList
		nodes    corev1.NodeList
	)
	for _, l := range []client.ObjectList{&lmns, &blocks, &monitors, &nodes} {
		if err := d.reader.List(ctx, l); err != nil {
			return ClusterEvent{}, fmt.Errorf("list %T: %w", l, err)
		}
	}
	return clusterEvent(d.now(), lmns.Items, blocks.Items, monitors.Items, nodes.Items), nil
}

// clusterEvent is the roll-up of Event at time now. A block's per-node rows
// are the monitored nodes its nodeSelector matches, and those that report it.
func clusterEvent(now time.Time, lmns []lanmonitorv1alpha1.LanMonitorNode, blocks []lanmonitorv1alpha1.IPBlock,
	monitors []lanmonitorv1alpha1.LanMonitor, nodes []corev1.Node) ClusterEvent {
	nodeLabels := make(map[string]labels.Set, len(nodes))
	for _, n := range nodes {
		nodeLabels[n.Name] = n.Labels
	}
	ev := ClusterEvent{Time: now, Nodes: []DashboardNode{}, IPBlocks: []DashboardIPBlock{}, LanMonitors: []DashboardMonitor{},
		TopTalkers: []lanmonitorv1alpha1.Talker{}}
	slices.SortFunc(lmns, func(a, b lanmonitorv1alpha1.LanMonitorNode) int { return cmp.Compare(a.Name, b.Name) })
	var lists []nodeTalkers
	for i := range lmns {
		n := &lmns[i]
		row := DashboardNode{Node: n.Name, Attached: len(n.Spec.Interfaces) > 0}
		var talkers []lanmonitorv1alpha1.Talker
		for _, is := range n.Spec.Interfaces {
			j := slices.IndexFunc(n.Status.Interfaces, func(s lanmonitorv1alpha1.NodeInterfaceStatus) bool { return s.Monitor == is.Monitor })
			if j < 0 {
				row.Attached = false
				continue
			}
			st := &n.Status.Interfaces[j]
			row.Attached = row.Attached && st.Attached
			if row.XDPMode == "" {
				row.XDPMode = st.XDPMode
			}
			row.Rates.BitsPerSecond += st.BitsPerSecond
			row.Rates.PacketsPerSecond += st.PacketsPerSecond
			row.TrackedSources += st.TrackedSources
			row.Capacity += st.TrackedSourcesCapacity
			talkers = append(talkers, st.TopTalkers...)
		}
		if top := mergeTalkers([]nodeTalkers{{node: n.Name, talkers: talkers}}, 1); len(top) == 1 {
			row.TopTalker = &DashboardTalker{Address: top[0].Address, BitsPerSecond: top[0].BitsPerSecond}
		}
		lists = append(lists, nodeTalkers{node: n.Name, talkers: talkers})
		if t := n.Status.LastReportTime; t != nil {
			age := max(0, now.Sub(t.Time).Seconds())
			row.LastReportAgeSeconds = &age
		}
		ev.Totals.BitsPerSecond += row.Rates.BitsPerSecond
		ev.Totals.PacketsPerSecond += row.Rates.PacketsPerSecond
		ev.Nodes = append(ev.Nodes, row)
	}
	ev.TopTalkers = append(ev.TopTalkers, mergeTalkers(lists, dashboardTopTalkers)...)

	slices.SortFunc(blocks, func(a, b lanmonitorv1alpha1.IPBlock) int { return cmp.Compare(a.Name, b.Name) })
	for i := range blocks {
		b := &blocks[i]
		row := DashboardIPBlock{Name: b.Name, Mode: b.Spec.Mode, CIDRCount: len(b.Spec.CIDRs), PerNode: []BlockOnNode{}}
		if row.Mode == "" {
			row.Mode = lanmonitorv1alpha1.BlockModeEnforce
		}
		sel, selErr := lanmonitorv1alpha1.NodeSelector(b.Spec.NodeSelector)
		for j := range lmns {
			n := &lmns[j]
			k := slices.IndexFunc(n.Status.IPBlocks, func(s lanmonitorv1alpha1.NodeIPBlockStatus) bool { return s.Name == b.Name })
			_, known := nodeLabels[n.Name]
			desired := selErr == nil && known && len(n.Spec.Interfaces) > 0 && sel.Matches(nodeLabels[n.Name])
			if k < 0 && !desired {
				continue
			}
			on := BlockOnNode{Node: n.Name}
			if k >= 0 {
				rep := &n.Status.IPBlocks[k]
				on.Generation = rep.Generation
				on.DroppedPackets = rep.DroppedPackets
				on.Enforced = rep.Generation == b.Generation
			}
			if on.Enforced {
				row.Enforced++
			}
			row.DroppedPackets += on.DroppedPackets
			row.PerNode = append(row.PerNode, on)
		}
		ev.Totals.DroppedPackets += row.DroppedPackets
		ev.IPBlocks = append(ev.IPBlocks, row)
	}

	slices.SortFunc(monitors, func(a, b lanmonitorv1alpha1.LanMonitor) int { return cmp.Compare(a.Name, b.Name) })
	for _, m := range monitors {
		ev.LanMonitors = append(ev.LanMonitors, DashboardMonitor{Name: m.Name, Conditions: append([]metav1.Condition{}, m.Status.Conditions...)})
	}
	return ev
}

// Hub is the dashboard's event stream and history.
func (d *Dashboard) Hub() *sse.Hub { return d.hub }

// Handler serves the dashboard:
//
//	GET /                     the page (webui.Cluster)
//	GET /ui/NAME              its scripts, styles and icon
//	GET /api/v1/events[?since=ID]             text/event-stream of ClusterEvent
//	GET /api/v1/history[?since=ID][&limit=N]  the last ten minutes of ClusterEvent (compressed if accepted)
//
// Unknown query parameters, a bad since, Last-Event-ID or limit are 400;
// more clients than the hub's cap are 429; errors are JSON {"error": "..."}.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, r *http.Request) {
		if err := sse.CheckQuery(r.URL.Query(), "since"); err != nil {
			sse.WriteError(w, err)
			return
		}
		sse.WriteError(w, d.hub.ServeEvents(w, r))
	})
	mux.Handle("GET /api/v1/history", webui.Compress(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := sse.CheckQuery(r.URL.Query(), "since", "limit"); err != nil {
			sse.WriteError(w, err)
			return
		}
		sse.WriteError(w, d.hub.ServeHistory(w, r))
	})))
	mux.Handle("GET /", webui.Cluster())
	return mux
}

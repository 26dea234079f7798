package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/internal/prefixes"
	"github.com/lanmonitor/lanmonitor/internal/sse"
	"github.com/lanmonitor/lanmonitor/internal/webui"
)

// Managers gives the API the running managers, in a stable order. The first
// one answers requests that name no interface.
type Managers func() []*Manager

// TalkersResponse is GET /api/v1/talkers.
type TalkersResponse struct {
	Interface   string       `json:"interface"`
	XDPMode     XDPMode      `json:"xdpMode"`
	Promiscuous bool         `json:"promiscuous"`
	Talkers     []TalkerJSON `json:"talkers"`
}

// TalkerJSON is one talker of TalkersResponse. Packets and bytes are
// cumulative; rates are over the last report interval.
type TalkerJSON struct {
	Address          string `json:"address"`
	Internal         bool   `json:"internal"`
	Packets          uint64 `json:"packets"`
	Bytes            uint64 `json:"bytes"`
	LocalPackets     uint64 `json:"localPackets"`
	SnoopedPackets   uint64 `json:"snoopedPackets"`
	BitsPerSecond    uint64 `json:"bitsPerSecond"`
	PacketsPerSecond uint64 `json:"packetsPerSecond"`
}

// StatsResponse is GET /api/v1/stats: cumulative counters of every frame the
// XDP hook saw (bytes are frame lengths, data_end - data; the rest in
// packets), one field per entry of counters (see bpf.Stats for each).
type StatsResponse struct {
	Packets                uint64 `json:"packets"`
	Bytes                  uint64 `json:"bytes"`
	Passed                 uint64 `json:"passed"`
	Dropped                uint64 `json:"dropped"`
	Malformed              uint64 `json:"malformed"`
	NonIP                  uint64 `json:"nonIP"`
	IPv4                   uint64 `json:"ipv4"`
	IPv6                   uint64 `json:"ipv6"`
	Fragments              uint64 `json:"fragments"`
	VLANTagged             uint64 `json:"vlanTagged"`
	Local                  uint64 `json:"local"`
	Snooped                uint64 `json:"snooped"`
	Exempted               uint64 `json:"exempted"`
	TalkerInserts          uint64 `json:"talkerInserts"`
	TalkerInsertErrors     uint64 `json:"talkerInsertErrors"`
	SamplesLost            uint64 `json:"samplesLost"`
	FilteredSnooped        uint64 `json:"filteredSnooped"`
	V4Mapped               uint64 `json:"v4Mapped"`
	TalkersFull            uint64 `json:"talkersFull"`
	TrackedSources         int    `json:"trackedSources"`
	TrackedSourcesCapacity int    `json:"trackedSourcesCapacity"`
}

// statsResponse is the API's form of the global counters.
func statsResponse(s bpf.Stats, tracked, capacity int) StatsResponse {
	out := StatsResponse{TrackedSources: tracked, TrackedSourcesCapacity: capacity}
	v := reflect.ValueOf(&out).Elem()
	for i := range counters {
		v.Field(counterIndex[i].response).SetUint(counterValue(&s, i))
	}
	return out
}

// InterfacesResponse is GET /api/v1/interfaces.
type InterfacesResponse struct {
	Interfaces []InterfaceJSON `json:"interfaces"`
}

// InterfaceJSON is one monitored interface: the name it was configured
// with (what ?interface= takes), its current name (it may have been
// renamed), its state and attachment.
type InterfaceJSON struct {
	Name        string  `json:"name"`
	CurrentName string  `json:"currentName"`
	State       State   `json:"state"`
	Message     string  `json:"message"`
	XDPMode     XDPMode `json:"xdpMode"`
	Promiscuous bool    `json:"promiscuous"`
}

// BlocksResponse is GET /api/v1/blocks.
type BlocksResponse struct {
	Rules []BlockJSON `json:"rules"`
}

// BlockJSON is one IPBlock's counters on the interface, in packets.
type BlockJSON struct {
	Name              string    `json:"name"`
	CIDRs             []string  `json:"cidrs"`
	Direction         Direction `json:"direction"`
	Mode              BlockMode `json:"mode"`
	MatchedPackets    uint64    `json:"matchedPackets"`
	DroppedPackets    uint64    `json:"droppedPackets"`
	ExemptedAddresses []string  `json:"exemptedAddresses"`
}

// NewHandler serves the local API:
//
//	GET /api/v1/talkers?limit=N[&interface=IF]  sorted by bitsPerSecond, then bytes, descending; limit=0: all; default: topN
//	GET /api/v1/stats[?interface=IF]
//	GET /api/v1/blocks[?interface=IF]
//	GET /api/v1/interfaces                       the monitored interfaces
//	GET /api/v1/events[?interface=IF][&since=ID] text/event-stream of ReportEvent, one per report
//	GET /api/v1/history[?interface=IF][&since=ID][&limit=N]  the last ten minutes of ReportEvent (compressed if accepted)
//	GET /metrics   Prometheus metrics of gatherer
//	GET /healthz   200 while the process serves
//	GET /readyz    200 when ready() returns nil, else 503 with its error
//	GET /          the dashboard (internal/webui), its files under /ui/
//
// Errors are JSON objects {"error": "..."} with status 400 (unknown or bad
// query parameter, bad Last-Event-ID), 404 (unknown interface), 429 (too
// many event-stream clients) or 503 (no interface attached yet).
func NewHandler(managers Managers, gatherer prometheus.Gatherer, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/talkers", func(w http.ResponseWriter, r *http.Request) {
		m, ok := pick(w, r, managers, "limit")
		if !ok {
			return
		}
		cfg := m.Config()
		limit := cfg.TopN
		if s := r.URL.Query().Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n > int(cfg.MaxTrackedSources) {
				writeError(w, http.StatusBadRequest, fmt.Errorf("limit: %q is not a number from 0 (all) to %d (the tracked-source capacity)", s, cfg.MaxTrackedSources))
				return
			}
			limit = n
		}
		ts, err := m.Talkers(limit)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		ifname, mode, promisc := m.Attachment()
		writeJSON(w, TalkersResponse{Interface: ifname, XDPMode: mode, Promiscuous: promisc, Talkers: talkersJSON(ts)})
	})
	mux.HandleFunc("GET /api/v1/stats", func(w http.ResponseWriter, r *http.Request) {
		m, ok := pick(w, r, managers)
		if !ok {
			return
		}
		s, tracked, capacity, err := m.Stats()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, statsResponse(s, tracked, capacity))
	})
	mux.HandleFunc("GET /api/v1/blocks", func(w http.ResponseWriter, r *http.Request) {
		m, ok := pick(w, r, managers)
		if !ok {
			return
		}
		rules, err := m.Rules()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		cidrs := map[string][]string{}
		for _, b := range m.Config().Blocks {
			ss := make([]string, len(b.CIDRs))
			for i, p := range b.CIDRs {
				ss[i] = prefixes.Format(prefixes.Normalize(p))
			}
			cidrs[b.Name] = ss
		}
		resp := BlocksResponse{Rules: make([]BlockJSON, len(rules))}
		for i, rr := range rules {
			resp.Rules[i] = BlockJSON{
				Name: rr.Name, CIDRs: cidrs[rr.Name], Direction: rr.Direction, Mode: rr.Mode,
				MatchedPackets: rr.Matched, DroppedPackets: rr.Dropped, ExemptedAddresses: nonNil(rr.ExemptedAddresses),
			}
		}
		writeJSON(w, resp)
	})
	mux.HandleFunc("GET /api/v1/interfaces", func(w http.ResponseWriter, r *http.Request) {
		if err := sse.CheckQuery(r.URL.Query()); err != nil {
			sse.WriteError(w, err)
			return
		}
		resp := InterfacesResponse{Interfaces: []InterfaceJSON{}}
		for _, m := range managers() {
			ifname, mode, promisc := m.Attachment()
			state, msg := m.State()
			resp.Interfaces = append(resp.Interfaces, InterfaceJSON{Name: m.Config().Interface, CurrentName: ifname, State: state, Message: msg, XDPMode: mode, Promiscuous: promisc})
		}
		writeJSON(w, resp)
	})
	mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := pick(w, r, managers, "since"); ok {
			sse.WriteError(w, m.Events().ServeEvents(w, r))
		}
	})
	mux.Handle("GET /api/v1/history", webui.Compress(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m, ok := pick(w, r, managers, "since", "limit"); ok {
			sse.WriteError(w, m.Events().ServeHistory(w, r))
		}
	})))
	mux.Handle("GET /", webui.Agent())
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// pick finds the manager a request names (?interface=), or the first one,
// after checking that the query has no parameters but interface and params.
func pick(w http.ResponseWriter, r *http.Request, managers Managers, params ...string) (*Manager, bool) {
	if err := sse.CheckQuery(r.URL.Query(), append(params, "interface")...); err != nil {
		sse.WriteError(w, err)
		return nil, false
	}
	ms := managers()
	if len(ms) == 0 {
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("no interface is monitored yet"))
		return nil, false
	}
	name := r.URL.Query().Get("interface")
	if name == "" {
		return ms[0], true
	}
	for _, m := range ms {
		if m.Config().Interface == name {
			return m, true
		}
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("interface %q is not monitored", name))
	return nil, false
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	sse.WriteError(w, &sse.HTTPError{Status: status, Err: err})
}

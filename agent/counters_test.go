package agent

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lanmonitor/lanmonitor/bpf"
)

// TestEveryCounterInEveryOutput: every field of bpf.Stats (every counter
// of the XDP program) is listed once in counters, and reaches both outputs
// with its own value: the Prometheus counter lanmonitor_<metric> and its
// field of GET /api/v1/stats.
func TestEveryCounterInEveryOutput(t *testing.T) {
	st := reflect.TypeFor[bpf.Stats]()
	listed := map[string]int{}
	for _, c := range counters {
		listed[c.field]++
	}
	var s bpf.Stats
	want := map[string]uint64{} // field -> value
	for i := range st.NumField() {
		name := st.Field(i).Name
		if listed[name] != 1 {
			t.Errorf("bpf.Stats.%s is listed %d times in counters, want once", name, listed[name])
		}
		v := uint64(1000 + i)
		reflect.ValueOf(&s).Elem().Field(i).SetUint(v)
		want[name] = v
	}
	if len(counters) != st.NumField() {
		t.Errorf("counters has %d entries for the %d fields of bpf.Stats", len(counters), st.NumField())
	}

	raw, err := json.Marshal(statsResponse(s, 7, 8))
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]uint64
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	m := &Manager{cfg: Config{Interface: "lan0"}, last: Report{Stats: s}, events: newEventHub()}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() []*Manager { return []*Manager{m} }))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	metrics := map[string]float64{}
	for _, f := range families {
		if len(f.GetMetric()) == 1 && f.GetMetric()[0].GetCounter() != nil {
			metrics[f.GetName()] = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	for _, c := range counters {
		if got := body[c.json]; got != want[c.field] {
			t.Errorf("GET /api/v1/stats %q = %d, want %d (bpf.Stats.%s)", c.json, got, want[c.field], c.field)
		}
		if got := metrics["lanmonitor_"+c.metric]; got != float64(want[c.field]) {
			t.Errorf("lanmonitor_%s = %v, want %d (bpf.Stats.%s)", c.metric, got, want[c.field], c.field)
		}
	}
	if body["trackedSources"] != 7 || body["trackedSourcesCapacity"] != 8 {
		t.Errorf("tracked sources %d of %d, want 7 of 8", body["trackedSources"], body["trackedSourcesCapacity"])
	}
}

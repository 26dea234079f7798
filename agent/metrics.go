package agent

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the managers' last reports as Prometheus metrics. Its
// cardinality is bounded: totals per interface, per-rule counters (one series
// per IPBlock), and talker gauges for the top N addresses only (N <= 100).
type Collector struct {
	managers Managers
}

// NewCollector returns a Collector over managers; register it with a
// prometheus.Registry.
func NewCollector(managers Managers) *Collector { return &Collector{managers: managers} }

var (
	labelsIf     = []string{"interface"}
	descFrames   = map[string]*prometheus.Desc{}
	descAttached = prometheus.NewDesc("lanmonitor_xdp_attached", "1 when the XDP program is attached, with the attach mode in use.", []string{"interface", "mode"}, nil)
	descPromisc  = prometheus.NewDesc("lanmonitor_promiscuous", "1 when the interface's IFF_PROMISC flag is set.", labelsIf, nil)
	descTracked  = prometheus.NewDesc("lanmonitor_tracked_sources", "Source addresses in the talker map.", labelsIf, nil)
	descCapacity = prometheus.NewDesc("lanmonitor_tracked_sources_capacity", "Capacity of the talker map.", labelsIf, nil)
	descBps      = prometheus.NewDesc("lanmonitor_bits_per_second", "Traffic rate of the interface over the last report interval.", labelsIf, nil)
	descRuleM    = prometheus.NewDesc("lanmonitor_rule_matched_packets_total", "Frames whose address matched the IPBlock.", []string{"interface", "ipblock"}, nil)
	descRuleD    = prometheus.NewDesc("lanmonitor_rule_dropped_packets_total", "Frames the IPBlock dropped.", []string{"interface", "ipblock"}, nil)
	descRuleE    = prometheus.NewDesc("lanmonitor_rule_exempted_packets_total", "Frames the IPBlock matched but passed because the address is protected.", []string{"interface", "ipblock"}, nil)
	descTalkBps  = prometheus.NewDesc("lanmonitor_talker_bits_per_second", "Rate of a top-N talker over the last report interval.", []string{"interface", "address", "internal"}, nil)
	descReport   = prometheus.NewDesc("lanmonitor_report_duration_seconds", "Time the reports took: reading the maps, ranking the talkers, publishing the dashboard event.", labelsIf, nil)
	descEvClient = prometheus.NewDesc("lanmonitor_dashboard_clients", "Clients connected to GET /api/v1/events.", labelsIf, nil)
	descEvBytes  = prometheus.NewDesc("lanmonitor_dashboard_history_bytes", "Bytes of the report events kept for the dashboard (their JSON).", labelsIf, nil)
	descEvCount  = prometheus.NewDesc("lanmonitor_dashboard_history_events", "Report events kept for the dashboard.", labelsIf, nil)
	descEvDrop   = prometheus.NewDesc("lanmonitor_dashboard_dropped_clients_total", "Event-stream clients disconnected because they fell behind.", labelsIf, nil)
	descEvRefuse = prometheus.NewDesc("lanmonitor_dashboard_refused_clients_total", "Event-stream clients refused (429) because too many were connected.", labelsIf, nil)
	descTalkPps  = prometheus.NewDesc("lanmonitor_talker_packets_per_second", "Packet rate of a top-N talker over the last report interval.", []string{"interface", "address", "internal"}, nil)
)

func init() {
	for _, c := range counters {
		descFrames[c.metric] = prometheus.NewDesc("lanmonitor_"+c.metric, c.help, labelsIf, nil)
	}
	descFrames["talker_evictions_total"] = prometheus.NewDesc("lanmonitor_talker_evictions_total",
		"Sources evicted from the full talker table (idle longest first).", labelsIf, nil)
}

// Describe sends every metric description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range descFrames {
		ch <- d
	}
	for _, d := range []*prometheus.Desc{descAttached, descPromisc, descTracked, descCapacity, descBps, descRuleM, descRuleD, descRuleE, descTalkBps, descTalkPps, descReport, descEvClient, descEvBytes, descEvCount, descEvDrop, descEvRefuse} {
		ch <- d
	}
}

// Collect sends the metrics of every manager's last report.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.managers() {
		r := m.Report()
		ifn := m.Config().Interface
		s := r.Stats
		for i, c := range counters {
			ch <- prometheus.MustNewConstMetric(descFrames[c.metric], prometheus.CounterValue, float64(counterValue(&s, i)), ifn)
		}
		ch <- prometheus.MustNewConstMetric(descFrames["talker_evictions_total"], prometheus.CounterValue, float64(r.Evictions), ifn)
		if r.State == StateAttached {
			ch <- prometheus.MustNewConstMetric(descAttached, prometheus.GaugeValue, 1, ifn, string(r.XDPMode))
		} else {
			ch <- prometheus.MustNewConstMetric(descAttached, prometheus.GaugeValue, 0, ifn, "")
		}
		ch <- prometheus.MustNewConstMetric(descPromisc, prometheus.GaugeValue, boolFloat(r.Promiscuous), ifn)
		ch <- prometheus.MustNewConstMetric(descTracked, prometheus.GaugeValue, float64(r.TrackedSources), ifn)
		ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, float64(r.TrackedSourcesCapacity), ifn)
		ch <- prometheus.MustNewConstMetric(descBps, prometheus.GaugeValue, float64(r.BitsPerSecond), ifn)
		n, d := m.ReportTiming()
		ch <- prometheus.MustNewConstSummary(descReport, n, d.Seconds(), nil, ifn)
		es := m.Events().Stats()
		ch <- prometheus.MustNewConstMetric(descEvClient, prometheus.GaugeValue, float64(es.Clients), ifn)
		ch <- prometheus.MustNewConstMetric(descEvBytes, prometheus.GaugeValue, float64(es.HistoryBytes), ifn)
		ch <- prometheus.MustNewConstMetric(descEvCount, prometheus.GaugeValue, float64(es.HistoryEvents), ifn)
		ch <- prometheus.MustNewConstMetric(descEvDrop, prometheus.CounterValue, float64(es.DroppedClients), ifn)
		ch <- prometheus.MustNewConstMetric(descEvRefuse, prometheus.CounterValue, float64(es.RefusedClients), ifn)
		for _, rr := range r.Rules {
			ch <- prometheus.MustNewConstMetric(descRuleM, prometheus.CounterValue, float64(rr.Matched), ifn, rr.Name)
			ch <- prometheus.MustNewConstMetric(descRuleD, prometheus.CounterValue, float64(rr.Dropped), ifn, rr.Name)
			ch <- prometheus.MustNewConstMetric(descRuleE, prometheus.CounterValue, float64(rr.Exempted), ifn, rr.Name)
		}
		// The gauges of the current top N only, and no rank label: a talker
		// keeps one series while it stays in the top N (whatever its rank),
		// and a scrape never holds more than N series per family.
		for _, t := range r.TopTalkers {
			labels := []string{ifn, t.Address.String(), strconv.FormatBool(t.Internal)}
			ch <- prometheus.MustNewConstMetric(descTalkBps, prometheus.GaugeValue, float64(t.BitsPerSecond), labels...)
			ch <- prometheus.MustNewConstMetric(descTalkPps, prometheus.GaugeValue, float64(t.PacketsPerSecond), labels...)
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

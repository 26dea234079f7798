package controllers

import (
	"cmp"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// monitorSel is a LanMonitor with its parsed node selector.
type monitorSel struct {
	m   *lanmonitorv1alpha1.LanMonitor
	sel labels.Selector // nil when spec.nodeSelector does not parse
}

// parseMonitors parses the selectors of the monitors that are not being
// deleted, sorted oldest first (creationTimestamp, then name): the order in
// which interface conflicts are decided.
func parseMonitors(items []lanmonitorv1alpha1.LanMonitor) []monitorSel {
	out := make([]monitorSel, 0, len(items))
	for i := range items {
		m := &items[i]
		if m.DeletionTimestamp != nil {
			continue
		}
		sel, err := lanmonitorv1alpha1.NodeSelector(m.Spec.NodeSelector)
		if err != nil {
			sel = nil
		}
		out = append(out, monitorSel{m: m, sel: sel})
	}
	slices.SortFunc(out, func(a, b monitorSel) int {
		if c := a.m.CreationTimestamp.Compare(b.m.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.m.Name, b.m.Name)
	})
	return out
}

// nodePlan is which monitors run on one node.
type nodePlan struct {
	// selected are the monitors whose selector matches the node, oldest first.
	selected []*lanmonitorv1alpha1.LanMonitor
	// winners are the selected monitors that hold their interface on the
	// node, oldest first.
	winners []*lanmonitorv1alpha1.LanMonitor
	// losers maps a selected monitor that lost its interface to the older
	// monitor that holds it.
	losers map[string]string
}

// planNode decides which monitors run on a node. Two monitors conflict on a
// node when both select it and name the same interface (an unset interface
// names "the default-route interface"); the older monitor (creationTimestamp,
// then name) wins and the other does not run there. monitors must be sorted
// by parseMonitors.
func planNode(node *corev1.Node, monitors []monitorSel) nodePlan {
	var p nodePlan
	holder := map[string]string{}
	set := labels.Set(node.Labels)
	for _, ms := range monitors {
		if ms.sel == nil || !ms.sel.Matches(set) {
			continue
		}
		p.selected = append(p.selected, ms.m)
		if w, taken := holder[ms.m.Spec.Interface]; taken {
			if p.losers == nil {
				p.losers = map[string]string{}
			}
			p.losers[ms.m.Name] = w
			continue
		}
		holder[ms.m.Spec.Interface] = ms.m.Name
		p.winners = append(p.winners, ms.m)
	}
	return p
}

// isWinner reports whether monitor runs on the node of p.
func (p nodePlan) isWinner(monitor string) bool {
	return slices.ContainsFunc(p.winners, func(m *lanmonitorv1alpha1.LanMonitor) bool { return m.Name == monitor })
}

// expired reports whether b's expiresAt has passed at now (wall clock), or
// b's status already says Expired for its current generation: a lifted
// block is not enforced again when the clock steps back (a new generation,
// such as a later expiresAt, is decided afresh).
func expired(b *lanmonitorv1alpha1.IPBlock, now time.Time) bool {
	if b.Spec.ExpiresAt == nil {
		return false
	}
	if !now.Before(b.Spec.ExpiresAt.Time) {
		return true
	}
	c := meta.FindStatusCondition(b.Status.Conditions, lanmonitorv1alpha1.ConditionExpired)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == b.Generation
}

// reportInterval is a monitor's spec.reportInterval, or its default.
func reportInterval(m *lanmonitorv1alpha1.LanMonitor) time.Duration {
	if m.Spec.ReportInterval == nil || m.Spec.ReportInterval.Duration <= 0 {
		return lanmonitorv1alpha1.DefaultReportInterval
	}
	return m.Spec.ReportInterval.Duration
}

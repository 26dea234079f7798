package controllers

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// LanMonitorReconciler rolls the node reports of a LanMonitor up into its
// status: node counts, the cluster-wide top talkers, totals and rates, and
// the Ready and Degraded conditions (interface conflicts included).
type LanMonitorReconciler struct {
	client.Client
	limiter *writeLimiter
}

// +kubebuilder:rbac:groups=lanmonitor.io,resources=lanmonitors,verbs=get;list;watch
// +kubebuilder:rbac:groups=lanmonitor.io,resources=lanmonitors/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=lanmonitor.io,resources=lanmonitornodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// Reconcile computes the monitor's status and writes it when it changed:
// at once when a condition or observedGeneration changed, otherwise (counters,
// talkers, messages) at most once per spec.reportInterval.
func (r *LanMonitorReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var m lanmonitorv1alpha1.LanMonitor
	if err := r.Get(ctx, req.NamespacedName, &m); apierrors.IsNotFound(err) {
		r.limiter.forget(req.Name)
		return reconcile.Result{}, nil
	} else if err != nil {
		return reconcile.Result{}, err
	}
	if m.DeletionTimestamp != nil || r.limiter.behind(m.Name, m.ResourceVersion) {
		return reconcile.Result{}, nil
	}
	var monitors lanmonitorv1alpha1.LanMonitorList
	if err := r.List(ctx, &monitors, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	var lmns lanmonitorv1alpha1.LanMonitorNodeList
	if err := r.List(ctx, &lmns, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	status, talkers := monitorStatus(&m, parseMonitors(monitors.Items), nodes.Items, lmns.Items)
	now := time.Now()
	urgent := m.Status.ObservedGeneration != status.ObservedGeneration || conditionsShift(m.Status.Conditions, status.Conditions)
	// Merging the talkers is the costly part (topN x nodes entries), so it
	// is only done when a write may happen now; a node report arriving
	// within the interval costs only this check.
	if !urgent {
		if wait := r.limiter.wait(m.Name, reportInterval(&m), now); wait > 0 {
			return reconcile.Result{RequeueAfter: wait}, nil
		}
	}
	status.TopTalkers = mergeTalkers(talkers, int(cmp.Or(m.Spec.TopN, lanmonitorv1alpha1.DefaultTopN)))
	status.Display.Rate = ""
	if len(status.TopTalkers) > 0 {
		// RATE sits next to TOP TALKER in `kubectl get`: that talker's rate.
		status.Display.Rate = lanmonitorv1alpha1.FormatBitRate(status.TopTalkers[0].BitsPerSecond)
	}
	if equality.Semantic.DeepEqual(m.Status, status) {
		return reconcile.Result{}, nil
	}
	rv := m.ResourceVersion // applyStatus overwrites it with the written version
	wrote, err := applyStatus(ctx, r.Client, &m, "LanMonitor", status)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("apply LanMonitor %q status: %w", m.Name, err)
	}
	if wrote {
		r.limiter.wrote(m.Name, rv, m.ResourceVersion, now)
		log.FromContext(ctx).V(1).Info("wrote status", "urgent", urgent, "desired", status.Nodes.Desired, "ready", status.Nodes.Ready)
	}
	return reconcile.Result{}, nil
}

// conflict is a node where an older monitor holds the interface.
type conflict struct{ node, winner string }

// monitorStatus computes m's status from the nodes, every monitor (sorted by
// parseMonitors) and the LanMonitorNode reports, except for the top talkers:
// it returns the node lists to merge into them.
func monitorStatus(m *lanmonitorv1alpha1.LanMonitor, monitors []monitorSel, nodes []corev1.Node, lmns []lanmonitorv1alpha1.LanMonitorNode) (lanmonitorv1alpha1.LanMonitorStatus, []nodeTalkers) {
	st := lanmonitorv1alpha1.LanMonitorStatus{
		ObservedGeneration: m.Generation,
		Conditions:         slices.Clone(m.Status.Conditions),
	}
	reports := make(map[string]*lanmonitorv1alpha1.LanMonitorNode, len(lmns))
	for i := range lmns {
		reports[lmns[i].Name] = &lmns[i]
	}

	var (
		conflicts   []conflict
		notAttached []string
		talkers     []nodeTalkers
		resolved    []string
	)
	for i := range nodes {
		node := &nodes[i]
		p := planNode(node, monitors)
		if w, lost := p.losers[m.Name]; lost {
			conflicts = append(conflicts, conflict{node: node.Name, winner: w})
			continue
		}
		if !p.isWinner(m.Name) {
			continue
		}
		st.Nodes.Desired++
		lmn := reports[node.Name]
		if lmn == nil {
			continue
		}
		i := slices.IndexFunc(lmn.Status.Interfaces, func(s lanmonitorv1alpha1.NodeInterfaceStatus) bool { return s.Monitor == m.Name })
		if i < 0 {
			continue // not reported yet
		}
		rep := &lmn.Status.Interfaces[i]
		if rep.Attached {
			st.Nodes.Ready++
		} else {
			notAttached = append(notAttached, node.Name)
		}
		talkers = append(talkers, nodeTalkers{node: node.Name, talkers: rep.TopTalkers})
		st.Totals.Add(rep.Totals)
		st.BitsPerSecond += rep.BitsPerSecond
		st.PacketsPerSecond += rep.PacketsPerSecond
		if rep.Interface != "" {
			resolved = append(resolved, rep.Interface)
		}
	}
	slices.SortFunc(conflicts, func(a, b conflict) int { return cmp.Compare(a.node, b.node) })
	slices.Sort(notAttached)

	st.Display = lanmonitorv1alpha1.MonitorDisplay{
		Nodes:     fmt.Sprintf("%d/%d", st.Nodes.Ready, st.Nodes.Desired),
		Interface: displayInterface(m.Spec.Interface, resolved),
	}

	gen := m.Generation
	_, selErr := lanmonitorv1alpha1.NodeSelector(m.Spec.NodeSelector)
	d, rd := st.Nodes.Desired, st.Nodes.Ready
	switch {
	case selErr != nil:
		setCondition(&st.Conditions, lanmonitorv1alpha1.ConditionReady, false, lanmonitorv1alpha1.ReasonInvalidNodeSelector,
			"spec.nodeSelector: "+selErr.Error(), gen)
	case d == 0 && len(conflicts) > 0:
		setCondition(&st.Conditions, lanmonitorv1alpha1.ConditionReady, false, lanmonitorv1alpha1.ReasonInterfaceConflict,
			"runs on no node: "+conflictMessage(m.Spec.Interface, conflicts), gen)
	case d == 0:
		setCondition(&st.Conditions, lanmonitorv1alpha1.ConditionReady, false, lanmonitorv1alpha1.ReasonNoMatchingNodes,
			"no node matches spec.nodeSelector", gen)
	case rd == d:
		setCondition(&st.Conditions, lanmonitorv1alpha1.ConditionReady, true, lanmonitorv1alpha1.ReasonAllNodesReady,
			fmt.Sprintf("attached on all %d nodes", d), gen)
	default:
		setCondition(&st.Conditions, lanmonitorv1alpha1.ConditionReady, false, lanmonitorv1alpha1.ReasonNodesNotReady,
			fmt.Sprintf("attached on %d of %d nodes", rd, d), gen)
	}
	switch {
	case selErr != nil:
		setCondition(&st.Conditions, lanmonitorv1alpha1.ConditionDegraded, true, lanmonitorv1alpha1.ReasonInvalidNodeSelector,
			"spec.nodeSelector: "+selErr.Error(), gen)
	case len(conflicts) > 0:
		setCondition(&st.Conditions, lanmonitorv1alpha1.ConditionDegraded, true, lanmonitorv1alpha1.ReasonInterfaceConflict,
			conflictMessage(m.Spec.Interface, conflicts), gen)
	case len(notAttached) > 0:
		setCondition(&st.Conditions, lanmonitorv1alpha1.ConditionDegraded, true, lanmonitorv1alpha1.ReasonNotAttached,
			"not attached on "+listNames(notAttached, 5)+" (see their LanMonitorNode status)", gen)
	default:
		setCondition(&st.Conditions, lanmonitorv1alpha1.ConditionDegraded, false, lanmonitorv1alpha1.ReasonAsExpected,
			"no interface conflict, and every node that reported is attached", gen)
	}
	return st, talkers
}

// conflictMessage names the nodes where an older monitor holds the interface,
// and those monitors (at most five nodes, then a count).
func conflictMessage(iface string, conflicts []conflict) string {
	what := fmt.Sprintf("interface %q", iface)
	if iface == "" {
		what = "the default-route interface"
	}
	parts := make([]string, 0, len(conflicts))
	for _, c := range conflicts {
		parts = append(parts, fmt.Sprintf("node %s (held by LanMonitor %s)", c.node, c.winner))
	}
	return fmt.Sprintf("%s is monitored by an older LanMonitor on %d node(s): %s", what, len(conflicts), listNames(parts, 5))
}

// listNames joins at most n names, then says how many were left out.
func listNames(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}

// displayInterface renders the INTERFACE column: spec.interface, else the
// names the nodes resolved for the default route (at most three, then "+N").
func displayInterface(spec string, resolved []string) string {
	if spec != "" {
		return spec
	}
	slices.Sort(resolved)
	resolved = slices.Compact(resolved)
	switch {
	case len(resolved) == 0:
		return "(default route)"
	case len(resolved) <= 3:
		return strings.Join(resolved, ",")
	default:
		return fmt.Sprintf("%s +%d", strings.Join(resolved[:3], ","), len(resolved)-3)
	}
}

// SetupWithManager registers the reconciler.
func (r *LanMonitorReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	r.limiter = newWriteLimiter()
	return ctrl.NewControllerManagedBy(mgr).
		Named("lanmonitor").
		For(&lanmonitorv1alpha1.LanMonitor{}).
		// Another monitor's selector or interface decides conflicts.
		Watches(&lanmonitorv1alpha1.LanMonitor{}, handler.EnqueueRequestsFromMapFunc(r.allMonitors),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.allMonitors),
			builder.WithPredicates(labelsChanged())).
		Watches(&lanmonitorv1alpha1.LanMonitorNode{}, changedEntries(monitorEntries, nil)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

func (r *LanMonitorReconciler) allMonitors(ctx context.Context, _ client.Object) []reconcile.Request {
	var monitors lanmonitorv1alpha1.LanMonitorList
	if err := r.List(ctx, &monitors, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list LanMonitors")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(monitors.Items))
	for _, m := range monitors.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: m.Name}})
	}
	return reqs
}

// monitorEntries maps a LanMonitorNode to its per-monitor spec and status
// entries, by monitor name.
func monitorEntries(n *lanmonitorv1alpha1.LanMonitorNode) map[string][2]any {
	out := map[string][2]any{}
	for i := range n.Spec.Interfaces {
		e := out[n.Spec.Interfaces[i].Monitor]
		e[0] = &n.Spec.Interfaces[i]
		out[n.Spec.Interfaces[i].Monitor] = e
	}
	for i := range n.Status.Interfaces {
		e := out[n.Status.Interfaces[i].Monitor]
		e[1] = &n.Status.Interfaces[i]
		out[n.Status.Interfaces[i].Monitor] = e
	}
	return out
}

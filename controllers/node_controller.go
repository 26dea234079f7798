package controllers

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// NodeReconciler keeps one LanMonitorNode per node that some LanMonitor
// selects, named after the node: its spec (the resolved configuration of
// every monitor that runs there, and the IPBlocks that apply) and its owner
// references (every selecting monitor, for garbage collection). It deletes
// the object when no monitor selects the node any more or the node is gone.
// The request key is the node name.
type NodeReconciler struct {
	client.Client
	expiry *expiry
}

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=lanmonitor.io,resources=lanmonitors,verbs=get;list;watch
// +kubebuilder:rbac:groups=lanmonitor.io,resources=ipblocks,verbs=get;list;watch
// +kubebuilder:rbac:groups=lanmonitor.io,resources=lanmonitornodes,verbs=get;list;watch;create;patch;delete

// Reconcile computes the node's LanMonitorNode and writes it when it differs.
func (r *NodeReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	now := r.expiry.now() // the wall clock expiresAt is compared with
	var current lanmonitorv1alpha1.LanMonitorNode
	exists := true
	if err := r.Get(ctx, req.NamespacedName, &current); apierrors.IsNotFound(err) {
		exists = false
	} else if err != nil {
		return reconcile.Result{}, err
	}

	var node corev1.Node
	if err := r.Get(ctx, req.NamespacedName, &node); apierrors.IsNotFound(err) {
		return reconcile.Result{}, r.deleteIfExists(ctx, &current, exists, "node deleted")
	} else if err != nil {
		return reconcile.Result{}, err
	}
	var monitors lanmonitorv1alpha1.LanMonitorList
	if err := r.List(ctx, &monitors, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	plan := planNode(&node, parseMonitors(monitors.Items))
	if len(plan.selected) == 0 {
		return reconcile.Result{}, r.deleteIfExists(ctx, &current, exists, "no LanMonitor selects the node")
	}

	var blocks lanmonitorv1alpha1.IPBlockList
	if err := r.List(ctx, &blocks, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	endpoints, err := apiServerEndpoints(ctx, r)
	if err != nil {
		return reconcile.Result{}, err
	}
	spec := nodeSpec(plan, &node, blocks.Items, endpoints, func(b *lanmonitorv1alpha1.IPBlock) bool { return r.expiry.expired(b, now) })
	owners := ownerRefs(plan.selected)
	result := reconcile.Result{RequeueAfter: nextExpiry(spec, blocks.Items, now)}

	if exists && equality.Semantic.DeepEqual(current.Spec, spec) && equality.Semantic.DeepEqual(ourOwners(current.OwnerReferences), owners) {
		return result, nil
	}
	body, err := json.Marshal(map[string]any{
		"apiVersion": lanmonitorv1alpha1.GroupVersion.String(),
		"kind":       "LanMonitorNode",
		"metadata":   map[string]any{"name": node.Name, "ownerReferences": owners},
		"spec":       spec,
	})
	if err != nil {
		return reconcile.Result{}, err
	}
	obj := &lanmonitorv1alpha1.LanMonitorNode{ObjectMeta: metav1.ObjectMeta{Name: node.Name}}
	if err := r.Patch(ctx, obj, client.RawPatch(types.ApplyPatchType, body), client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return reconcile.Result{}, fmt.Errorf("apply LanMonitorNode %q: %w", node.Name, err)
	}
	log.FromContext(ctx).V(1).Info("applied LanMonitorNode", "interfaces", len(spec.Interfaces), "ipBlocks", len(spec.IPBlocks))
	return result, nil
}

func (r *NodeReconciler) deleteIfExists(ctx context.Context, lmn *lanmonitorv1alpha1.LanMonitorNode, exists bool, why string) error {
	if !exists || lmn.DeletionTimestamp != nil {
		return nil
	}
	err := r.Delete(ctx, lmn, client.Preconditions{UID: &lmn.UID})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone already, or replaced: the new object has its own event
	}
	if err != nil {
		return fmt.Errorf("delete LanMonitorNode %q: %w", lmn.Name, err)
	}
	log.FromContext(ctx).Info("deleted LanMonitorNode", "reason", why)
	return nil
}

// nodeSpec is the desired spec of a node's LanMonitorNode: one interface per
// winning monitor (sorted by monitor name) and the IPBlocks that apply
// (sorted by rule ID): not those isExpired says have expired.
func nodeSpec(plan nodePlan, node *corev1.Node, blocks []lanmonitorv1alpha1.IPBlock, apiEndpoints []string,
	isExpired func(*lanmonitorv1alpha1.IPBlock) bool) lanmonitorv1alpha1.LanMonitorNodeSpec {
	var spec lanmonitorv1alpha1.LanMonitorNodeSpec
	for _, m := range plan.winners {
		spec.Interfaces = append(spec.Interfaces, interfaceSpec(m, apiEndpoints))
	}
	slices.SortFunc(spec.Interfaces, func(a, b lanmonitorv1alpha1.NodeInterfaceSpec) int { return cmp.Compare(a.Monitor, b.Monitor) })

	set := labels.Set(node.Labels)
	var applicable []*lanmonitorv1alpha1.IPBlock
	for i := range blocks {
		b := &blocks[i]
		if b.DeletionTimestamp != nil || b.Status.RuleID <= 0 || isExpired(b) {
			continue
		}
		sel, err := selector(b.Spec.NodeSelector)
		if err != nil || !sel.Matches(set) {
			continue
		}
		applicable = append(applicable, b)
	}
	// Sort by rule ID; of two blocks claiming one ID (a hand-edited status,
	// until the IPBlock controller reassigns one) only the older is sent.
	slices.SortFunc(applicable, func(a, b *lanmonitorv1alpha1.IPBlock) int {
		if c := cmp.Compare(a.Status.RuleID, b.Status.RuleID); c != 0 {
			return c
		}
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	for _, b := range applicable {
		if n := len(spec.IPBlocks); n > 0 && spec.IPBlocks[n-1].RuleID == b.Status.RuleID {
			continue
		}
		if len(spec.IPBlocks) == lanmonitorv1alpha1.MaxNodeIPBlocks {
			break // the IPBlock controller reports TooManyIPBlocks for the rest
		}
		spec.IPBlocks = append(spec.IPBlocks, lanmonitorv1alpha1.NodeIPBlockRef{
			Name: b.Name, RuleID: b.Status.RuleID, Generation: b.Generation,
		})
	}
	return spec
}

// interfaceSpec resolves a monitor's spec for a node: defaults filled in,
// and the API server endpoints added to the protected CIDRs.
func interfaceSpec(m *lanmonitorv1alpha1.LanMonitor, apiEndpoints []string) lanmonitorv1alpha1.NodeInterfaceSpec {
	s := m.Spec
	out := lanmonitorv1alpha1.NodeInterfaceSpec{
		Monitor:           m.Name,
		Interface:         s.Interface,
		Promiscuous:       s.Promiscuous == nil || *s.Promiscuous,
		XDPMode:           cmp.Or(s.XDPMode, lanmonitorv1alpha1.XDPModeAuto),
		InternalCIDRs:     slices.Clone(s.InternalCIDRs),
		TopN:              cmp.Or(s.TopN, lanmonitorv1alpha1.DefaultTopN),
		ReportInterval:    metav1.Duration{Duration: reportInterval(m)},
		MaxTrackedSources: cmp.Or(s.MaxTrackedSources, lanmonitorv1alpha1.DefaultMaxTrackedSources),
		FlowSampling:      s.FlowSampling,
	}
	out.ProtectedCIDRs = slices.Clone(s.ProtectedCIDRs)
	for _, ep := range apiEndpoints {
		if !slices.Contains(out.ProtectedCIDRs, ep) && len(out.ProtectedCIDRs) < lanmonitorv1alpha1.MaxNodeProtectedCIDRs {
			out.ProtectedCIDRs = append(out.ProtectedCIDRs, ep)
		}
	}
	return out
}

// ownerRefs are the owner references of a LanMonitorNode: every monitor that
// selects the node, conflict losers included, sorted by name. None is the
// controller, so that several can own it; the garbage collector deletes it
// when all of them are gone.
func ownerRefs(monitors []*lanmonitorv1alpha1.LanMonitor) []metav1.OwnerReference {
	out := make([]metav1.OwnerReference, 0, len(monitors))
	for _, m := range monitors {
		out = append(out, metav1.OwnerReference{
			APIVersion: lanmonitorv1alpha1.GroupVersion.String(),
			Kind:       "LanMonitor",
			Name:       m.Name,
			UID:        m.UID,
		})
	}
	slices.SortFunc(out, func(a, b metav1.OwnerReference) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// ourOwners filters the LanMonitor owner references out of refs.
func ourOwners(refs []metav1.OwnerReference) []metav1.OwnerReference {
	out := []metav1.OwnerReference{}
	for _, r := range refs {
		if r.APIVersion == lanmonitorv1alpha1.GroupVersion.String() && r.Kind == "LanMonitor" {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b metav1.OwnerReference) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// nextExpiry is how long until the first IPBlock in spec expires, 0 if none
// will: the reconcile then runs again exactly at expiresAt and lifts it. It
// is at most maxExpiryWait, so that a clock step or a suspend, which the
// requeue's timer does not see, delays lifting by that much at most.
func nextExpiry(spec lanmonitorv1alpha1.LanMonitorNodeSpec, blocks []lanmonitorv1alpha1.IPBlock, now time.Time) time.Duration {
	var next time.Duration
	for i := range blocks {
		b := &blocks[i]
		if b.Spec.ExpiresAt == nil || !slices.ContainsFunc(spec.IPBlocks, func(r lanmonitorv1alpha1.NodeIPBlockRef) bool { return r.Name == b.Name }) {
			continue
		}
		if d := expiryRequeue(b, now); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	return next
}

// SetupWithManager registers the reconciler with workers reconciles in parallel.
func (r *NodeReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	if r.expiry == nil {
		r.expiry = newExpiry(nil)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("lanmonitornode").
		For(&corev1.Node{}, builder.WithPredicates(labelsChanged())).
		// Spec drift (someone else edited or deleted the object).
		Watches(&lanmonitorv1alpha1.LanMonitorNode{}, &handler.EnqueueRequestForObject{},
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&lanmonitorv1alpha1.LanMonitor{}, handler.EnqueueRequestsFromMapFunc(r.allNodes),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&lanmonitorv1alpha1.IPBlock{}, handler.EnqueueRequestsFromMapFunc(r.monitoredNodes),
			builder.WithPredicates(ipBlockPlacementChanged())).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(r.monitoredNodes)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// allNodes enqueues every node, and every LanMonitorNode (whose node may be gone).
func (r *NodeReconciler) allNodes(ctx context.Context, _ client.Object) []reconcile.Request {
	reqs := r.monitoredNodes(ctx, nil)
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list nodes")
		return reqs
	}
	for _, n := range nodes.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: n.Name}})
	}
	return reqs
}

// monitoredNodes enqueues the nodes that have a LanMonitorNode.
func (r *NodeReconciler) monitoredNodes(ctx context.Context, _ client.Object) []reconcile.Request {
	var lmns lanmonitorv1alpha1.LanMonitorNodeList
	if err := r.List(ctx, &lmns, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list LanMonitorNodes")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(lmns.Items))
	for _, n := range lmns.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: n.Name}})
	}
	return reqs
}

// labelsChanged passes creations, deletions and label changes.
func labelsChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return !equality.Semantic.DeepEqual(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
	}}
}

// ipBlockPlacementChanged passes the IPBlock events that change what
// LanMonitorNode specs carry: a block with a rule ID appearing or going, a
// new generation, a rule ID assigned, the block expiring.
func ipBlockPlacementChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool {
			return e.Object.(*lanmonitorv1alpha1.IPBlock).Status.RuleID != 0
		},
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*lanmonitorv1alpha1.IPBlock), e.ObjectNew.(*lanmonitorv1alpha1.IPBlock)
			return o.Generation != n.Generation || o.Status.RuleID != n.Status.RuleID ||
				isExpiredCondition(o) != isExpiredCondition(n) || (o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil)
		},
	}
}

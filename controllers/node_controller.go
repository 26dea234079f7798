package controllers

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// every monitor that runs there, with the API server's addresses protected)
// and its owner references (every selecting monitor, for garbage
// collection). It deletes the object when no monitor selects the node any
// more or the node is gone. IPBlocks are not its business: the agents watch
// them, so an IPBlock change writes no LanMonitorNode. The request key is
// the node name.
type NodeReconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=lanmonitor.io,resources=lanmonitors,verbs=get;list;watch
// +kubebuilder:rbac:groups=lanmonitor.io,resources=lanmonitornodes,verbs=get;list;watch;create;patch;delete

// Reconcile computes the node's LanMonitorNode and writes it when it differs.
func (r *NodeReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
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

	endpoints, err := apiServerEndpoints(ctx, r)
	if err != nil {
		return reconcile.Result{}, err
	}
	spec := nodeSpec(plan, endpoints)
	if exists && current.Status.AgentVersion == "" {
		// A 0.2 agent enforces what the 0.2 controller listed: keep it
		// until the node runs an agent that watches the IPBlocks itself.
		spec.IPBlocks = current.Spec.IPBlocks
	}
	owners := ownerRefs(plan.selected)
	if exists && equality.Semantic.DeepEqual(current.Spec, spec) && equality.Semantic.DeepEqual(ourOwners(current.OwnerReferences), owners) {
		return reconcile.Result{}, nil
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
	log.FromContext(ctx).V(1).Info("applied LanMonitorNode", "interfaces", len(spec.Interfaces), "legacyIPBlocks", len(spec.IPBlocks))
	return reconcile.Result{}, nil
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
// winning monitor, sorted by monitor name.
func nodeSpec(plan nodePlan, apiEndpoints []string) lanmonitorv1alpha1.LanMonitorNodeSpec {
	var spec lanmonitorv1alpha1.LanMonitorNodeSpec
	for _, m := range plan.winners {
		spec.Interfaces = append(spec.Interfaces, interfaceSpec(m, apiEndpoints))
	}
	slices.SortFunc(spec.Interfaces, func(a, b lanmonitorv1alpha1.NodeInterfaceSpec) int { return cmp.Compare(a.Monitor, b.Monitor) })
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

// SetupWithManager registers the reconciler with workers reconciles in parallel.
func (r *NodeReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("lanmonitornode").
		For(&corev1.Node{}, builder.WithPredicates(labelsChanged())).
		// Spec drift (someone else edited or deleted the object), and the
		// node's agent reporting its version (the legacy spec.ipBlocks go).
		Watches(&lanmonitorv1alpha1.LanMonitorNode{}, &handler.EnqueueRequestForObject{},
			builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, agentVersionReported()))).
		Watches(&lanmonitorv1alpha1.LanMonitor{}, handler.EnqueueRequestsFromMapFunc(r.allNodes),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
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

// agentVersionReported passes the updates in which a LanMonitorNode's
// status.agentVersion appears.
func agentVersionReported() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		DeleteFunc: func(event.DeleteEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*lanmonitorv1alpha1.LanMonitorNode)
			n, ok2 := e.ObjectNew.(*lanmonitorv1alpha1.LanMonitorNode)
			return ok1 && ok2 && o.Status.AgentVersion == "" && n.Status.AgentVersion != ""
		},
	}
}

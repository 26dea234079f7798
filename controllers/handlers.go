package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

func enqueue(q queue, name string) {
	q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
}

// entriesFunc maps a LanMonitorNode to the entries it holds for other
// objects (by their name): what its spec says about them and what its status
// reports.
type entriesFunc func(*lanmonitorv1alpha1.LanMonitorNode) map[string][2]any

// changedEntries is a LanMonitorNode event handler that enqueues the objects
// whose entries changed: all of them on creation and deletion, and on an
// update only those whose spec or status entry differs. A node report that
// changes one monitor's counters thus wakes that monitor only. all, when not
// nil, is called instead when the update changes spec.interfaces (which
// changes what every object derives from the node).
func changedEntries(entries entriesFunc, all func(context.Context, queue)) handler.EventHandler {
	each := func(o client.Object, q queue) {
		if n, ok := o.(*lanmonitorv1alpha1.LanMonitorNode); ok {
			for k := range entries(n) {
				enqueue(q, k)
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) {
			if all != nil {
				all(ctx, q)
			}
			each(e.Object, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q queue) {
			if all != nil {
				all(ctx, q)
			}
			each(e.Object, q)
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q queue) { each(e.Object, q) },
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			o, ok1 := e.ObjectOld.(*lanmonitorv1alpha1.LanMonitorNode)
			n, ok2 := e.ObjectNew.(*lanmonitorv1alpha1.LanMonitorNode)
			if !ok1 || !ok2 {
				return
			}
			if all != nil && !equality.Semantic.DeepEqual(o.Spec.Interfaces, n.Spec.Interfaces) {
				all(ctx, q)
			}
			oe, ne := entries(o), entries(n)
			for k, v := range ne {
				if !equality.Semantic.DeepEqual(oe[k], v) {
					enqueue(q, k)
				}
			}
			for k := range oe {
				if _, ok := ne[k]; !ok {
					enqueue(q, k)
				}
			}
		},
	}
}

// Package controllers holds the lanmonitor controller's reconcilers:
//
//   - NodeReconciler writes one LanMonitorNode spec per selected node (node
//     selection, interface conflicts, the IPBlocks that apply, protected
//     API server endpoints) and deletes it when no monitor selects the node.
//   - IPBlockReconciler assigns rule IDs, expires blocks and rolls the node
//     reports up into IPBlock status.
//   - LanMonitorReconciler rolls the node reports up into LanMonitor status.
//
// Only the controller writes LanMonitor status, IPBlock status and
// LanMonitorNode spec; each node's agent writes its LanMonitorNode status.
package controllers

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options tunes the controllers.
type Options struct {
	// NodeWorkers is how many LanMonitorNode reconciles run in parallel
	// (default 4): a change that concerns every node, such as a new IPBlock,
	// is one write per node, and parallel writes bring its latency down.
	NodeWorkers int
	// StatusWorkers is how many LanMonitor and how many IPBlock status
	// reconciles run in parallel (default 2).
	StatusWorkers int
	// Clock is the wall clock IPBlock expiresAt is compared with (default
	// the system's); tests step a fake one.
	Clock clock.PassiveClock
}

// Setup registers the reconcilers with mgr, whose cache must be built with
// CacheOptions.
func Setup(mgr ctrl.Manager, opts Options) error {
	if opts.NodeWorkers <= 0 {
		opts.NodeWorkers = 4
	}
	if opts.StatusWorkers <= 0 {
		opts.StatusWorkers = 2
	}
	if err := (&NodeReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr, opts.NodeWorkers); err != nil {
		return fmt.Errorf("set up LanMonitorNode controller: %w", err)
	}
	if err := (&IPBlockReconciler{Client: mgr.GetClient(), expiry: newExpiry(opts.Clock)}).SetupWithManager(mgr, opts.StatusWorkers); err != nil {
		return fmt.Errorf("set up IPBlock controller: %w", err)
	}
	if err := (&LanMonitorReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr, opts.StatusWorkers); err != nil {
		return fmt.Errorf("set up LanMonitor controller: %w", err)
	}
	return nil
}

// CacheOptions narrows the manager's cache to what the controllers read:
// EndpointSlices of the `kubernetes` Service only, Nodes reduced to their
// labels and addresses, and no managed fields anywhere.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}: {Transform: slimNode},
			&discoveryv1.EndpointSlice{}: {
				Namespaces: map[string]cache.Config{apiServerNamespace: {}},
				Label:      labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: apiServerService}),
			},
		},
	}
}

// slimNode keeps what the controllers use of a Node: name, labels and addresses.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              n.Name,
			UID:               n.UID,
			ResourceVersion:   n.ResourceVersion,
			CreationTimestamp: n.CreationTimestamp,
			DeletionTimestamp: n.DeletionTimestamp,
			Labels:            n.Labels,
		},
		Status: corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}

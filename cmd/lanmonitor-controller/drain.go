package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// drainOptions configure `lanmonitor-controller drain`.
type drainOptions struct {
	namespace  string
	deployment string
	lease      string
	timeout    time.Duration
}

// newDrainCommand is the chart's pre-delete hook: it stops the controller,
// empties every LanMonitorNode spec and waits until the agents report their
// interfaces released (programs detached, pins removed, promiscuity
// restored), so that `helm uninstall` leaves no XDP program behind. The
// agents keep their programs attached when their pods stop, on purpose, so
// that a restart or an upgrade never lapses enforcement: only this tells
// them the whole installation is going away.
func newDrainCommand() *cobra.Command {
	var o drainOptions
	cmd := &cobra.Command{
		Use:   "drain --namespace NS --deployment NAME",
		Short: "Release every node before an uninstall (the Helm chart's pre-delete hook)",
		Long: `Scales the controller Deployment to zero and waits for its leader lease to
be released, empties the spec of every LanMonitorNode, and waits until each
node's agent reports no interface (detached, unpinned, promiscuity
restored). Nodes that do not confirm within --timeout are listed; the
command still succeeds, so that an unreachable node cannot block an
uninstall.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return drain(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the controller Deployment and its lease (default $POD_NAMESPACE)")
	f.StringVar(&o.deployment, "deployment", "", "name of the controller Deployment (required)")
	f.StringVar(&o.lease, "leader-election-id", "lanmonitor-controller.lanmonitor.io", "name of the controller's leader election Lease")
	f.DurationVar(&o.timeout, "timeout", 90*time.Second, "how long to wait for the controller to stop and the agents to release their interfaces")
	cmd.MarkFlagRequired("deployment")
	return cmd
}

func drain(ctx context.Context, o drainOptions) error {
	if o.namespace == "" {
		return fmt.Errorf("--namespace: required (or set POD_NAMESPACE)")
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(lanmonitorv1alpha1.AddToScheme(scheme))
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "drain: "+format+"\n", args...) }

	// 1. Stop the controller, so that it does not rewrite the specs.
	scale := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":0}}`))
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: o.namespace, Name: o.deployment}}
	err = c.SubResource("scale").Patch(ctx, dep, scale, &client.SubResourcePatchOptions{SubResourceBody: &autoscalingv1.Scale{}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("scale Deployment %s/%s to zero: %w", o.namespace, o.deployment, err)
	}
	logf("scaled Deployment %s/%s to zero; waiting for its lease %s to be released", o.namespace, o.deployment, o.lease)
	for {
		var l coordinationv1.Lease
		err := c.Get(ctx, client.ObjectKey{Namespace: o.namespace, Name: o.lease}, &l)
		if apierrors.IsNotFound(err) || err == nil && leaseFree(&l, time.Now()) {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the controller did not release lease %s/%s in time: %w", o.namespace, o.lease, ctx.Err())
		}
		time.Sleep(500 * time.Millisecond)
	}

	// 2. Empty every LanMonitorNode's spec: the agents release.
	var nodes lanmonitorv1alpha1.LanMonitorNodeList
	if err := c.List(ctx, &nodes); err != nil {
		return fmt.Errorf("list LanMonitorNodes: %w", err)
	}
	empty := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"interfaces":null,"ipBlocks":null}}`))
	for i := range nodes.Items {
		if err := c.Patch(ctx, &nodes.Items[i], empty); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("empty LanMonitorNode %s: %w", nodes.Items[i].Name, err)
		}
	}
	logf("emptied %d LanMonitorNode specs; waiting for the agents to release their interfaces", len(nodes.Items))

	// 3. Wait for every agent to report nothing attached.
	for {
		var pending []string
		if err := c.List(ctx, &nodes); err == nil {
			for _, n := range nodes.Items {
				if len(n.Status.Interfaces) > 0 {
					pending = append(pending, n.Name)
				}
			}
		}
		if len(pending) == 0 {
			logf("every node released its interfaces")
			return nil
		}
		if ctx.Err() != nil {
			slices.Sort(pending)
			logf("WARNING: these nodes did not confirm in %v (agent down?); their XDP programs may stay attached until their agent runs again or the node reboots: %v", o.timeout, pending)
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// leaseFree: nobody holds the lease, or its holder stopped renewing it.
func leaseFree(l *coordinationv1.Lease, now time.Time) bool {
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return true
	}
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return false
	}
	return now.After(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

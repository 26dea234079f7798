package main

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lanmonitor/lanmonitor/config/crd"
)

// crdFieldManager owns the CRDs' fields that apply-crds writes.
const crdFieldManager = "lanmonitor-crds"

// newApplyCRDsCommand is the chart's pre-upgrade hook. Helm installs the
// CRDs of a chart's crds/ directory on the first install only and never
// upgrades them, so a field added in a new version would be pruned by the
// old schema (and a new validation rule not enforced). This applies the
// CRDs this binary was built with, by server-side apply, before the new
// controller and agents start, and waits until the API server serves them.
func newApplyCRDsCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "apply-crds",
		Short: "Apply this version's CustomResourceDefinitions (server-side apply) and wait until they are established",
		Long: `Applies the LanMonitor, IPBlock and LanMonitorNode CustomResourceDefinitions
this binary embeds with server-side apply (field manager lanmonitor-crds,
taking over fields other managers, such as helm, set), then waits until each
is Established. The chart runs it as a pre-upgrade hook: helm itself never
upgrades CRDs from a chart's crds/ directory. Objects are kept: the CRDs
only gain what the new version adds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := ctrl.GetConfig()
			if err != nil {
				return fmt.Errorf("load kubeconfig: %w", err)
			}
			scheme := runtime.NewScheme()
			utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
			c, err := client.New(cfg, client.Options{Scheme: scheme})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return applyCRDs(ctx, c, ctrl.Log.WithName("apply-crds"))
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the CRDs to be established")
	return cmd
}

// applyCRDs applies every embedded CRD with server-side apply and waits
// until each is Established. Errors: a refused apply (RBAC, an invalid
// schema), or ctx ending before the API server serves a CRD.
func applyCRDs(ctx context.Context, c client.Client, log logr.Logger) error {
	crds, err := crd.All()
	if err != nil {
		return err
	}
	for _, obj := range crds {
		obj.TypeMeta = metaCRD
		obj.ManagedFields, obj.ResourceVersion = nil, ""
		if err := c.Patch(ctx, obj, client.Apply, client.FieldOwner(crdFieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply CustomResourceDefinition %s: %w", obj.Name, err)
		}
		log.Info("applied", "crd", obj.Name)
	}
	for _, obj := range crds {
		for {
			var got apiextensionsv1.CustomResourceDefinition
			if err := c.Get(ctx, client.ObjectKey{Name: obj.Name}, &got); err != nil {
				return fmt.Errorf("read CustomResourceDefinition %s: %w", obj.Name, err)
			}
			if established(&got) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CustomResourceDefinition %s not established: %w", obj.Name, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

var metaCRD = metav1.TypeMeta{APIVersion: apiextensionsv1.SchemeGroupVersion.String(), Kind: "CustomResourceDefinition"}

// established reports whether the API server serves the CRD (its
// Established condition is True).
func established(c *apiextensionsv1.CustomResourceDefinition) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

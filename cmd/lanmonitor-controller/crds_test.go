package main

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// TestApplyCRDs: an IPBlock CRD of an older version, without
// spec.reason, prunes the field; apply-crds brings this version's CRDs,
// after which spec.reason is accepted and stored, and the objects created
// before are still there.
func TestApplyCRDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	scheme := runtime.NewScheme()
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	// The "previous version": spec.reason unknown to the schema.
	var old apiextensionsv1.CustomResourceDefinition
	if err := c.Get(ctx, client.ObjectKey{Name: "ipblocks.lanmonitor.io"}, &old); err != nil {
		t.Fatal(err)
	}
	delete(old.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties, "reason")
	if err := c.Update(ctx, &old); err != nil {
		t.Fatal(err)
	}
	reasonKept := func(name string) string {
		t.Helper()
		var b lanmonitorv1alpha1.IPBlock
		deadline := time.Now().Add(10 * time.Second)
		for {
			b = lanmonitorv1alpha1.IPBlock{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: lanmonitorv1alpha1.IPBlockSpec{CIDRs: []string{"198.18.0.66"}, Reason: "port scans"}}
			if err := env.Client.Create(ctx, &b); err != nil {
				t.Fatal(err)
			}
			got := b.Spec.Reason
			if err := env.Client.Delete(ctx, &b); err != nil {
				t.Fatal(err)
			}
			// The schema change takes a moment to reach the API server's handlers.
			if got == "" || time.Now().After(deadline) {
				return got
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if got := reasonKept("probe-old"); got != "" {
		t.Fatalf("the old schema kept spec.reason %q; the test needs a field it prunes", got)
	}
	kept := &lanmonitorv1alpha1.IPBlock{ObjectMeta: metav1.ObjectMeta{Name: "created-before"}, Spec: lanmonitorv1alpha1.IPBlockSpec{CIDRs: []string{"198.18.0.67"}}}
	if err := env.Client.Create(ctx, kept); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Client.Delete(context.Background(), kept) })

	if err := applyCRDs(ctx, c, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b := lanmonitorv1alpha1.IPBlock{ObjectMeta: metav1.ObjectMeta{Name: "probe-new"}, Spec: lanmonitorv1alpha1.IPBlockSpec{CIDRs: []string{"198.18.0.66"}, Reason: "port scans"}}
		if err := env.Client.Create(ctx, &b); err != nil {
			t.Fatal(err)
		}
		env.Client.Delete(ctx, &b)
		if b.Spec.Reason == "port scans" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after apply-crds spec.reason is still pruned (%q)", b.Spec.Reason)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var got lanmonitorv1alpha1.IPBlock
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "created-before"}, &got); err != nil || got.Spec.CIDRs[0] != "198.18.0.67" {
		t.Fatalf("the IPBlock created before the upgrade: %+v, %v", got.Spec, err)
	}
	var now apiextensionsv1.CustomResourceDefinition
	if err := c.Get(ctx, client.ObjectKey{Name: "ipblocks.lanmonitor.io"}, &now); err != nil {
		t.Fatal(err)
	}
	owned := false
	for _, mf := range now.ManagedFields {
		owned = owned || (mf.Manager == crdFieldManager && mf.Operation == metav1.ManagedFieldsOperationApply)
	}
	if !owned {
		t.Errorf("managed fields %+v: no apply by %s", now.ManagedFields, crdFieldManager)
	}
	// Applying again changes nothing and succeeds (a second upgrade).
	if err := applyCRDs(ctx, c, logr.Discard()); err != nil {
		t.Fatal(err)
	}
}

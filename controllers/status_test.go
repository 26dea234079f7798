package controllers_test

import (
	"context"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/controllers"
)

// TestStatusWriteRejectsStale: a status computed from an old version of the
// object is not written (the controller then waits for the newer version).
func TestStatusWriteRejectsStale(t *testing.T) {
	t.Cleanup(func() { cleanup(t) })
	ctx := context.Background()
	b := ipBlock("stale", "198.18.0.1")
	create(t, b)
	stale := b.DeepCopy()
	wrote, err := controllers.ApplyStatus(ctx, env.Client, b.DeepCopy(), "IPBlock", lanmonitorv1alpha1.IPBlockStatus{MatchedPackets: 1})
	if !wrote || err != nil {
		t.Fatalf("first write: wrote %v, err %v", wrote, err)
	}
	wrote, err = controllers.ApplyStatus(ctx, env.Client, stale, "IPBlock", lanmonitorv1alpha1.IPBlockStatus{MatchedPackets: 2})
	if wrote || err != nil {
		t.Fatalf("stale write: wrote %v, err %v; want not written, no error", wrote, err)
	}
	var got lanmonitorv1alpha1.IPBlock
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "stale"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.MatchedPackets != 1 {
		t.Errorf("matchedPackets %d, want 1 (the stale write must not land)", got.Status.MatchedPackets)
	}
}

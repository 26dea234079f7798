package controllers

import (
	"context"
	"errors"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// errRuleIDsExhausted is returned when every rule ID is in use.
var errRuleIDsExhausted = errors.New("every rule ID from 1 to 65535 is in use")

// ruleIDs allocates IPBlock rule IDs.
//
// A rule ID is stored in the IPBlock's status.ruleID, so it survives
// controller restarts: a new controller reads it back from its cache and
// keeps it. IDs are unique among IPBlocks: when two blocks claim the same ID
// (only possible if someone edited a status), the older block (creationTimestamp,
// then name) keeps it and the other gets a new one.
//
// A freed ID (its block deleted, or recreated under a new UID) is reused only
// once no LanMonitorNode mentions it any more, neither in its spec (the
// controller still asks an agent to enforce it) nor in its status (an agent
// still has the rule, or its counters, in the datapath). Until then a counter
// slot or trie entry of the old block could be attributed to the new one.
// Among the safe IDs the lowest is taken, which keeps the per-CPU rule
// counter array that the IDs index dense.
//
// The cache can lag behind the status writes of this process, so the IDs
// handed out are also remembered here until their block is deleted.
type ruleIDs struct {
	mu       sync.Mutex
	reserved map[string]reservation // by IPBlock name
}

type reservation struct {
	uid types.UID
	id  int32
}

func newRuleIDs() *ruleIDs {
	return &ruleIDs{reserved: map[string]reservation{}}
}

// forget drops the reservation of a deleted block. Its ID stays unavailable
// while LanMonitorNodes mention it.
func (r *ruleIDs) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.reserved, name)
}

// ensure returns b's rule ID, allocating one if b has none (or lost its ID to
// an older block).
func (r *ruleIDs) ensure(ctx context.Context, c client.Reader, b *lanmonitorv1alpha1.IPBlock) (int32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if res, ok := r.reserved[b.Name]; ok && res.uid == b.UID {
		return res.id, nil
	}

	var blocks lanmonitorv1alpha1.IPBlockList
	if err := c.List(ctx, &blocks, client.UnsafeDisableDeepCopy); err != nil {
		return 0, err
	}
	older := func(o *lanmonitorv1alpha1.IPBlock) bool {
		if c := o.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c < 0
		}
		return o.Name < b.Name
	}
	if id := b.Status.RuleID; id > 0 {
		taken := false
		for i := range blocks.Items {
			o := &blocks.Items[i]
			if o.UID != b.UID && o.Status.RuleID == id && older(o) {
				taken = true
				break
			}
		}
		for name, res := range r.reserved {
			if name != b.Name && res.id == id {
				taken = true
			}
		}
		if !taken {
			r.reserved[b.Name] = reservation{uid: b.UID, id: id}
			return id, nil
		}
	}

	used := make([]bool, lanmonitorv1alpha1.MaxRuleID+1)
	mark := func(id int32) {
		if id > 0 && id <= lanmonitorv1alpha1.MaxRuleID {
			used[id] = true
		}
	}
	for i := range blocks.Items {
		if blocks.Items[i].UID != b.UID {
			mark(blocks.Items[i].Status.RuleID)
		}
	}
	for _, res := range r.reserved {
		mark(res.id)
	}
	var nodes lanmonitorv1alpha1.LanMonitorNodeList
	if err := c.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return 0, err
	}
	for i := range nodes.Items {
		for _, ref := range nodes.Items[i].Spec.IPBlocks {
			mark(ref.RuleID)
		}
		for _, st := range nodes.Items[i].Status.IPBlocks {
			mark(st.RuleID)
		}
	}
	for id := int32(1); id <= lanmonitorv1alpha1.MaxRuleID; id++ {
		if !used[id] {
			r.reserved[b.Name] = reservation{uid: b.UID, id: id}
			return id, nil
		}
	}
	return 0, errRuleIDsExhausted
}

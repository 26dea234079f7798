package controllers

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// FieldManager is the field manager of every write of the controller.
const FieldManager = "lanmonitor-controller"

// applyStatus writes status as obj's whole status with server-side apply,
// with obj's resourceVersion as a precondition. The controller is the only
// writer of LanMonitor and IPBlock status, so the precondition fails only
// when the cache is behind (our previous write, or a spec change, has not
// arrived yet); the caller then drops the write, as the watch event for the
// newer version is on its way and will trigger a fresh reconcile. This way a
// status computed from stale data (say Enforced=True for an old generation)
// never lands on a newer object.
//
// It reports whether the write happened.
func applyStatus(ctx context.Context, c client.Client, obj client.Object, kind string, status any) (bool, error) {
	body, err := json.Marshal(map[string]any{
		"apiVersion": lanmonitorv1alpha1.GroupVersion.String(),
		"kind":       kind,
		"metadata": map[string]any{
			"name":            obj.GetName(),
			"resourceVersion": obj.GetResourceVersion(),
		},
		"status": status,
	})
	if err != nil {
		return false, err
	}
	err = c.Status().Patch(ctx, obj, client.RawPatch(types.ApplyPatchType, body),
		client.FieldOwner(FieldManager), client.ForceOwnership)
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// writeLimiter remembers, by object name, when its status was last written,
// to write rollups at most once per interval, and from which
// resourceVersion, to recognise a cache that has not seen that write yet.
type writeLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
	from map[string]string // resourceVersion the last write was made on
}

func newWriteLimiter() *writeLimiter {
	return &writeLimiter{last: map[string]time.Time{}, from: map[string]string{}}
}

// behind reports whether the cached object (at resourceVersion rv) is the
// version our last status write replaced: the cache has not caught up, and
// the event of the written version will trigger a reconcile soon. Computing
// from it would only produce a write that fails its precondition.
func (l *writeLimiter) behind(key, rv string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.from[key] == rv
}

// wait returns how long to wait before the status of key may be written again.
func (l *writeLimiter) wait(key string, interval time.Duration, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	last, ok := l.last[key]
	if !ok {
		return 0
	}
	return max(0, last.Add(interval).Sub(now))
}

// wrote records a status write made at now, which turned version from into
// version to (the same when the server found nothing to change, in which
// case no event will follow).
func (l *writeLimiter) wrote(key, from, to string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last[key] = now
	if from != to {
		l.from[key] = from
	} else {
		delete(l.from, key)
	}
}

func (l *writeLimiter) forget(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.last, key)
	delete(l.from, key)
}

// setCondition sets a condition on conds, keeping lastTransitionTime when
// the status does not change (meta.SetStatusCondition does that).
func setCondition(conds *[]metav1.Condition, typ string, status bool, reason, message string, generation int64) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type:               typ,
		Status:             s,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: generation,
	})
}

// conditionsShift reports whether the conditions differ in something other
// than their messages: a condition added or removed, or a status, reason or
// observedGeneration changed. Such a change is written at once; a change of
// counters or messages alone waits for the rate limit.
func conditionsShift(old, new []metav1.Condition) bool {
	if len(old) != len(new) {
		return true
	}
	for _, n := range new {
		o := meta.FindStatusCondition(old, n.Type)
		if o == nil || o.Status != n.Status || o.Reason != n.Reason || o.ObservedGeneration != n.ObservedGeneration {
			return true
		}
	}
	return false
}

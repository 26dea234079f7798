package agent

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// IPBlock expiry and the clock it is decided on.
//
// spec.expiresAt is a wall-clock time. Every evaluation compares it with the
// wall time read then (a clock.PassiveClock in Kubernetes mode, so tests
// can step it), never with a delay computed earlier: timers run on the
// monotonic clock, which a clock step does not move and a suspended machine
// does not advance. The wake-ups computed from an expiresAt are therefore
// capped at maxIdle (expiryWait): after a clock step forward or a resume
// from suspend, a block is lifted at most that long after its expiresAt
// passed on the wall clock (in Kubernetes mode the status report interval
// bounds it further).
//
// A block once seen expired stays lifted (liftedBlocks): a clock stepped
// back afterwards does not enforce it again. The same holds when the
// controller has marked it Expired for its current generation. A new
// generation (an edited spec, such as a later expiresAt) is decided afresh.

// liftedKey identifies the IPBlock, generation and expiresAt seen expired.
type liftedKey struct {
	uid        types.UID
	generation int64
	expiresAt  time.Time
}

// liftedBlocks are the IPBlocks seen expired, by name. A nil liftedBlocks
// decides on the wall clock alone and remembers nothing.
type liftedBlocks map[string]liftedKey

// expired reports whether b is expired at now: its expiresAt has passed,
// or it was seen expired before with the same UID, generation and
// expiresAt, or the controller marked it Expired for its generation. An
// expired block is remembered.
func (l liftedBlocks) expired(b *v1alpha1.IPBlock, now time.Time) bool {
	e := b.Spec.ExpiresAt
	if e == nil {
		return false
	}
	k := liftedKey{uid: b.UID, generation: b.Generation, expiresAt: e.Time}
	if p, ok := l[b.Name]; ok {
		if p.uid == k.uid && p.generation == k.generation && p.expiresAt.Equal(k.expiresAt) {
			return true
		}
		delete(l, b.Name) // another object or generation: decided afresh
	}
	if now.Before(e.Time) && !markedExpired(b) {
		return false
	}
	if l != nil {
		l[b.Name] = k
	}
	return true
}

// markedExpired: b's status says Expired=True for its current generation.
func markedExpired(b *v1alpha1.IPBlock) bool {
	c := meta.FindStatusCondition(b.Status.Conditions, v1alpha1.ConditionExpired)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == b.Generation
}

// expiryWait is how long to sleep at now (wall clock) before the next
// expiresAt, expiry (zero: none): until 10ms after it, at most maxIdle, so
// that a clock step or a suspend, which no timer sees, delays lifting by
// at most maxIdle.
func expiryWait(now, expiry time.Time) time.Duration {
	if expiry.IsZero() {
		return maxIdle
	}
	return min(maxIdle, max(expiry.Sub(now), 0)+10*time.Millisecond)
}

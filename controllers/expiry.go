package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// maxExpiryWait bounds a requeue computed from an IPBlock's expiresAt. A
// requeue is a timer on the monotonic clock, which a clock step does not
// move and a suspended machine does not advance; expiresAt is wall-clock
// time, compared with the wall clock at every reconcile. So after a clock
// step forward or a resume, a block is lifted at most this long after its
// expiresAt passed.
const maxExpiryWait = time.Minute

// expiry decides whether IPBlocks have expired, on a wall clock, and
// remembers the blocks seen expired: once marked Expired (which the agents
// also lift a block on, whatever their own clocks say) a block is not
// reported in force again when the clock steps back, from the moment it
// is seen expired (before its Expired condition is written, which then
// says so across restarts: see expired). A new generation, or another
// object of the same name, is decided afresh.
type expiry struct {
	clock clock.PassiveClock

	mu     sync.Mutex
	lifted map[string]liftedBlock // by IPBlock name
}

// liftedBlock is the IPBlock object and generation seen expired.
type liftedBlock struct {
	uid        types.UID
	generation int64
}

// newExpiry decides expiry on c (nil: the system's wall clock).
func newExpiry(c clock.PassiveClock) *expiry {
	if c == nil {
		c = clock.RealClock{}
	}
	return &expiry{clock: c, lifted: map[string]liftedBlock{}}
}

// now is the wall time to decide expiry at.
func (e *expiry) now() time.Time { return e.clock.Now() }

// expired reports whether b is expired at now: expired(b, now), or seen
// expired before in this generation.
func (e *expiry) expired(b *lanmonitorv1alpha1.IPBlock, now time.Time) bool {
	if b.Spec.ExpiresAt == nil {
		return false
	}
	k := liftedBlock{uid: b.UID, generation: b.Generation}
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.lifted[b.Name]; ok {
		if p == k {
			return true
		}
		delete(e.lifted, b.Name)
	}
	if !expired(b, now) {
		return false
	}
	e.lifted[b.Name] = k
	return true
}

// forget drops what is remembered of a deleted IPBlock.
func (e *expiry) forget(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.lifted, name)
}

// expiryRequeue is how long to wait at now before deciding b's expiry
// again: until its expiresAt, at most maxExpiryWait; 0 when it has none or
// it has passed.
func expiryRequeue(b *lanmonitorv1alpha1.IPBlock, now time.Time) time.Duration {
	if b.Spec.ExpiresAt == nil {
		return 0
	}
	if d := b.Spec.ExpiresAt.Sub(now); d > 0 {
		return min(d, maxExpiryWait)
	}
	return 0
}

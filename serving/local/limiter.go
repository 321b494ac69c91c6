package local

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// limiter is a weighted semaphore with a bounded wait: the router's budget
// of request bytes in memory, and each model's slots for requests in
// flight. Taking and giving back units is a compare-and-swap and an add,
// without a lock, so requests that fit never contend on a mutex; only
// those that must wait touch a channel.
type limiter struct {
	limit   int64
	used    atomic.Int64
	waiting atomic.Int64
	maxWait int64
	// wake has a token for each release that found a waiter; a waiter
	// that takes one tries again. A token may be spent by a waiter that
	// still does not fit; it then waits for the next release.
	wake chan struct{}
}

// Why a request was not admitted.
var (
	errQueueFull = errors.New("queue full")
	errWaited    = errors.New("waited too long")
)

func newLimiter(limit int64, maxWait int) *limiter {
	return &limiter{limit: limit, maxWait: int64(maxWait), wake: make(chan struct{}, max(maxWait, 1))}
}

// tryAcquire takes n units if they are free.
func (s *limiter) tryAcquire(n int64) bool {
	for {
		used := s.used.Load()
		if used+n > s.limit {
			return false
		}
		if s.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// acquire takes n units, waiting up to wait for them when maxWait others
// are not waiting already.
func (s *limiter) acquire(ctx context.Context, n int64, wait time.Duration) error {
	if s.tryAcquire(n) {
		return nil
	}
	// Registered as a waiter before trying again: a release that the
	// next try misses sees the waiter and leaves a token.
	if s.waiting.Add(1) > s.maxWait {
		s.waiting.Add(-1)
		return errQueueFull
	}
	defer s.waiting.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for !s.tryAcquire(n) {
		select {
		case <-s.wake:
		case <-timer.C:
			return errWaited
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// release gives back n units and wakes the waiters.
func (s *limiter) release(n int64) {
	s.used.Add(-n)
	for range s.waiting.Load() {
		select {
		case s.wake <- struct{}{}:
		default:
			return
		}
	}
}

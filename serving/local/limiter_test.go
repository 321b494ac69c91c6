package local

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"merlin.dev/merlin/internal/poll"
)

// TestLimiterBounds has 32 goroutines take and give back weighted units of
// a small limiter, waiting for room: the units held never pass the limit,
// every acquisition ends (a release always wakes a waiter that fits), and
// all are given back.
func TestLimiterBounds(t *testing.T) {
	s := newLimiter(10, 32)
	var held, peak atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 200 {
				n := int64(1 + (g+i)%4)
				if err := s.acquire(context.Background(), n, time.Hour); err != nil {
					t.Error(err)
					return
				}
				now := held.Add(n)
				for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
				}
				held.Add(-n)
				s.release(n)
			}
		})
	}
	wg.Wait()
	if peak.Load() > 10 || s.used.Load() != 0 || s.waiting.Load() != 0 {
		t.Errorf("peak %d of 10, %d still used, %d waiting", peak.Load(), s.used.Load(), s.waiting.Load())
	}
}

// TestLimiterQueue: with the limit held, one request may wait and the next
// is refused at once; the waiter gets in when the holder gives back.
func TestLimiterQueue(t *testing.T) {
	s := newLimiter(1, 1)
	if err := s.acquire(context.Background(), 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- s.acquire(context.Background(), 1, time.Hour) }()
	poll.Until(t, 10*time.Second, "one waiter", func() bool { return s.waiting.Load() == 1 })
	if err := s.acquire(context.Background(), 1, time.Hour); !errors.Is(err, errQueueFull) {
		t.Errorf("a second waiter: %v; want %v", err, errQueueFull)
	}
	s.release(1)
	if err := <-got; err != nil {
		t.Errorf("the waiter after a release: %v", err)
	}
	full := newLimiter(1, 0)
	full.tryAcquire(1)
	if err := full.acquire(context.Background(), 1, time.Hour); !errors.Is(err, errQueueFull) {
		t.Errorf("no queue: %v; want %v", err, errQueueFull)
	}
}

// BenchmarkAdmissionLimiters is what admission adds to a request that fits:
// a slot of its model and its bytes of the budget, taken and given back,
// from every core at once.
func BenchmarkAdmissionLimiters(b *testing.B) {
	gate, budget := newLimiter(DefaultMaxConcurrency, DefaultMaxQueue), newLimiter(DefaultMaxBufferedBytes, DefaultMaxQueue)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if gate.acquire(ctx, 1, time.Second) != nil || budget.acquire(ctx, 40, time.Second) != nil {
				b.Error("no room")
				return
			}
			budget.release(40)
			gate.release(1)
		}
	})
}

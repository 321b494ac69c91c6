package local

import (
	"testing"
	"time"

	"merlin.dev/merlin/serving"
)

// A request that draws a version being retired waits for the table that
// no longer has it, instead of drawing three times from the stale table
// and answering 503 "no version serving" while another version serves.
func TestAcquireWaitsForThePublisher(t *testing.T) {
	table := func(p *process) *routeTable {
		return &routeTable{models: map[string]*modelRoutes{"m": {choices: []choice{{cum: 100, p: p}}}}}
	}
	old := &process{v: serving.Version{ID: "m-old", Model: "m"}}
	next := &process{v: serving.Version{ID: "m-next", Model: "m"}}
	l := &Local{}
	l.routes.Store(table(old))

	l.mu.Lock() // as convergeLocked: retire, then publish, under l.mu
	old.retired.Store(true)
	got := make(chan *process, 1)
	go func() {
		p, _ := l.acquire("m", "")
		got <- p
	}()
	select {
	case p := <-got:
		t.Fatalf("acquire answered %v from the stale table before the new one was published", p)
	case <-time.After(50 * time.Millisecond): // a slow machine only makes this pass vacuously
	}
	l.routes.Store(table(next))
	l.mu.Unlock()

	if p := <-got; p != next {
		t.Fatalf("acquire = %v, want the version of the published table", p)
	}
	if n := next.inflight.Load(); n != 1 {
		t.Fatalf("in flight on the new version = %d, want 1", n)
	}
}

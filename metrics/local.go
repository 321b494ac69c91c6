package metrics

import (
	"context"
	"sync"
	"time"
)

// Local is the Provider for the local target: it reads the router's
// in-process counters. It keeps one baseline snapshot per version, taken
// the first time a window starting at a given time is asked for, so a
// window's counts are the difference between now and that baseline. After
// a daemon restart the counters start from zero and so does the window.
type Local struct {
	reg *Registry
	now func() time.Time

	mu        sync.Mutex
	baselines map[string]baseline // by version
}

type baseline struct {
	since time.Time // the window start it belongs to
	snap  Snapshot
}

var _ Provider = (*Local)(nil)

// NewLocal returns a Provider over the router's registry.
func NewLocal(reg *Registry) *Local {
	return &Local{reg: reg, now: time.Now, baselines: map[string]baseline{}}
}

// Window implements Provider.
func (l *Local) Window(_ context.Context, q Query) (Window, error) {
	now := l.now()
	cand, start := l.since(q.Model, q.Candidate, q.Since, now)
	stable, stableStart := l.since(q.Model, q.Stable, q.Since, now)
	if stableStart.After(start) {
		start = stableStart
	}
	return Window{Start: start, End: now, Candidate: cand, Stable: stable}, nil
}

func (l *Local) since(model, version string, since, now time.Time) (Snapshot, time.Time) {
	if version == "" {
		return Snapshot{At: now}, now
	}
	cur := l.reg.For(model, version).Snapshot(now)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.baselines[version]
	if !ok || !b.since.Equal(since) || cur.Requests < b.snap.Requests || cur.Agree+cur.Disagree+cur.CmpFail < b.snap.Agree+b.snap.Disagree+b.snap.CmpFail {
		// A new window, or counters that restarted from zero.
		b = baseline{since: since, snap: cur}
		l.baselines[version] = b
	}
	return cur.Sub(b.snap), b.snap.At
}

// Forget drops a version's baseline once it is gone.
func (l *Local) Forget(version string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.baselines, version)
}

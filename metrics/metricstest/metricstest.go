// Package metricstest is the behaviour every metrics.Provider must show,
// written once and run against each backend: the in-process Local provider
// and the Prometheus provider over the router's and over Istio's series.
//
// A backend is fed the way the router feeds its registry (requests with a
// status code and a latency, prediction comparisons, dropped mirrors), and
// the suite checks what the provider reports for a window: exact counts
// since the window's start, a p99 within the precision of the histogram
// the backend records into, comparisons, counter resets, unknown versions
// and an unreachable backend.
package metricstest

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"merlin.dev/merlin/metrics"
)

// Backend is one running metrics pipeline: the router-side recording and
// the Provider that reads it back.
type Backend interface {
	// Provider is the provider under test. It may be a new one after
	// Restart: an in-process provider restarts with the router.
	Provider() metrics.Provider
	// Observe records one request a version answered, as the router does.
	Observe(model, version string, code int, d time.Duration)
	// Compared records one prediction comparison (metrics.Agree, ...).
	Compared(model, version, outcome string)
	// Dropped records one mirrored request dropped under load.
	Dropped(model, version string)
	// Settle returns once everything recorded so far is visible to the
	// provider (for Prometheus: scraped), and a window started right after
	// it returns does not include it.
	Settle(t *testing.T)
	// Restart makes every counter start again from zero, as a router
	// restart does.
	Restart(t *testing.T)
}

// Harness describes a backend to the suite.
type Harness struct {
	// Start returns a fresh backend; its resources end with t.
	Start func(t *testing.T) Backend
	// LatencyBounds are the upper bounds in seconds of the histogram the
	// backend records into when they are not metrics.BucketBounds (Istio's
	// millisecond buckets); p99 is then checked to lie in the true value's
	// bucket widened by one fine bucket (25%) on each side.
	LatencyBounds []float64
	// Unreachable returns a provider whose server is down, or is nil when
	// the provider has no server to lose.
	Unreachable func(t *testing.T) metrics.Provider
}

var seq atomic.Int64

// names returns a model and two version ids unique in the test binary, so
// that backends sharing one Prometheus never see each other's series.
func names(prefix string) (model, candidate, stable string) {
	n := seq.Add(1)
	model = fmt.Sprintf("%s-%d", prefix, n)
	return model, fmt.Sprintf("%s-c%07d", model, n), fmt.Sprintf("%s-s%07d", model, n)
}

// Run runs the contract suite.
func Run(t *testing.T, h Harness) {
	t.Run("CountsSinceStart", func(t *testing.T) { countsSinceStart(t, h) })
	t.Run("UnknownVersionsAreZero", func(t *testing.T) { unknownVersions(t, h) })
	t.Run("CounterReset", func(t *testing.T) { counterReset(t, h) })
	t.Run("UnreachableIsError", func(t *testing.T) { unreachable(t, h) })
}

func window(t *testing.T, b Backend, q metrics.Query) metrics.Window {
	t.Helper()
	w, err := b.Provider().Window(context.Background(), q)
	if err != nil {
		t.Fatalf("Window(%+v): %v", q, err)
	}
	return w
}

func repeat(n int, f func()) {
	for range n {
		f()
	}
}

// countsSinceStart: traffic before the window is excluded, traffic in it
// is counted exactly, by status class, with its latency distribution and
// comparisons.
func countsSinceStart(t *testing.T, h Harness) {
	b := h.Start(t)
	m, cand, stable := names("counts")
	// Before the window: slow requests and failures that must not count.
	repeat(7, func() { b.Observe(m, cand, 200, 2*time.Second) })
	repeat(5, func() { b.Observe(m, stable, 503, time.Second) })
	repeat(3, func() { b.Compared(m, cand, metrics.Disagree) })
	b.Settle(t)

	since := time.Now()
	q := metrics.Query{Model: m, Candidate: cand, Stable: stable, Since: since}
	w0 := window(t, b, q)
	if w0.Candidate.Requests != 0 || w0.Stable.Requests != 0 || w0.Candidate.Disagree != 0 {
		t.Fatalf("window at its start: candidate %d requests, %d disagreements, stable %d requests; want 0 (earlier traffic excluded)",
			w0.Candidate.Requests, w0.Candidate.Disagree, w0.Stable.Requests)
	}

	repeat(90, func() { b.Observe(m, cand, 200, 20*time.Millisecond) })
	repeat(6, func() { b.Observe(m, cand, 503, 300*time.Millisecond) })
	repeat(4, func() { b.Observe(m, cand, 404, 3*time.Millisecond) })
	repeat(50, func() { b.Observe(m, stable, 200, 8*time.Millisecond) })
	repeat(40, func() { b.Compared(m, cand, metrics.Agree) })
	repeat(2, func() { b.Compared(m, cand, metrics.Disagree) })
	repeat(1, func() { b.Compared(m, cand, metrics.Failed) })
	repeat(3, func() { b.Dropped(m, cand) })
	b.Settle(t)

	w := window(t, b, q)
	if w.Start.Before(since) || !w.End.After(w.Start) {
		t.Errorf("window [%v, %v] for since %v: want since <= start < end", w.Start, w.End, since)
	}
	c, s := w.Candidate, w.Stable
	got := [...]uint64{c.Requests, c.Errors, c.Client, c.Agree, c.Disagree, c.CmpFail, c.Dropped, s.Requests, s.Errors}
	want := [...]uint64{100, 6, 4, 40, 2, 1, 3, 50, 0}
	if got != want {
		t.Errorf("candidate requests/errors/client/agree/disagree/cmpFail/dropped, stable requests/errors = %v, want %v", got, want)
	}
	wantSum := 90*20*time.Millisecond + 6*300*time.Millisecond + 4*3*time.Millisecond
	if d := time.Duration(c.LatencyNs) - wantSum; d < -time.Microsecond || d > time.Microsecond {
		t.Errorf("candidate latency sum %v, want %v", time.Duration(c.LatencyNs), wantSum)
	}
	for name, snap := range map[string]metrics.Snapshot{"candidate": c, "stable": s} {
		var n uint64
		for _, x := range snap.Buckets {
			n += x
		}
		if n != snap.Requests {
			t.Errorf("%s histogram holds %d observations, want %d", name, n, snap.Requests)
		}
	}
	checkQuantile(t, h, "candidate p99", c.Quantile(0.99), 300*time.Millisecond)
	checkQuantile(t, h, "candidate p50", c.Quantile(0.5), 20*time.Millisecond)
	checkQuantile(t, h, "stable p99", s.Quantile(0.99), 8*time.Millisecond)
}

// checkQuantile checks an estimate against the true value: within the
// true value's bucket of the histogram the backend records into.
func checkQuantile(t *testing.T, h Harness, what string, got, truth time.Duration) {
	t.Helper()
	bounds, widen := h.LatencyBounds, 1.25
	if bounds == nil {
		bounds, widen = metrics.BucketBounds(), 1
	}
	sec := truth.Seconds()
	i := sort.SearchFloat64s(bounds, sec)
	lo, hi := 0.0, math.Inf(1)
	if i > 0 {
		lo = bounds[i-1]
	}
	if i < len(bounds) {
		hi = bounds[i]
	}
	lo, hi = lo/widen, hi*widen
	if g := got.Seconds(); g <= lo || g > hi {
		t.Errorf("%s = %v, want in (%gs, %gs] around the true %v", what, got, lo, hi, truth)
	}
}

// unknownVersions: versions nobody measured are zero, not an error.
func unknownVersions(t *testing.T, h Harness) {
	b := h.Start(t)
	m, cand, stable := names("unknown")
	other := m + "-other"
	repeat(5, func() { b.Observe(m, other, 200, time.Millisecond) })
	b.Settle(t)
	w := window(t, b, metrics.Query{Model: m, Candidate: cand, Stable: stable, Since: time.Now().Add(-time.Minute)})
	if w.Candidate != (metrics.Snapshot{At: w.Candidate.At}) || w.Stable != (metrics.Snapshot{At: w.Stable.At}) {
		t.Errorf("unknown versions: candidate %+v, stable %+v; want zero", w.Candidate, w.Stable)
	}
	w = window(t, b, metrics.Query{Model: m, Candidate: cand, Since: time.Now()})
	if w.Stable.Requests != 0 {
		t.Errorf("no stable version: %d requests", w.Stable.Requests)
	}
}

// counterReset: after the router restarts mid-window its counters start
// from zero; the provider neither wraps around nor loses what it counts
// from Window.Start on. A provider that can see across the restart
// (Prometheus) keeps Start and counts both halves; one that cannot
// (in-process) moves Start past the restart and counts from there.
func counterReset(t *testing.T, h Harness) {
	b := h.Start(t)
	m, cand, _ := names("reset")
	repeat(10, func() { b.Observe(m, cand, 200, 20*time.Millisecond) })
	b.Settle(t)
	since := time.Now()
	q := metrics.Query{Model: m, Candidate: cand, Since: since}
	if w := window(t, b, q); w.Candidate.Requests != 0 {
		t.Fatalf("window at its start: %d requests, want 0", w.Candidate.Requests)
	}
	repeat(30, func() { b.Observe(m, cand, 200, 20*time.Millisecond) })
	repeat(10, func() { b.Compared(m, cand, metrics.Agree) })
	b.Settle(t)
	if w := window(t, b, q); w.Candidate.Requests != 30 || w.Candidate.Agree != 10 {
		t.Fatalf("before the restart: %d requests, %d agreements; want 30, 10", w.Candidate.Requests, w.Candidate.Agree)
	}

	b.Restart(t)
	if w := window(t, b, q); w.Candidate.Requests > 30 {
		t.Fatalf("right after the restart: %d requests, want at most the 30 before it", w.Candidate.Requests)
	}
	// Fewer than before the restart, so that the drop is visible as a reset.
	repeat(20, func() { b.Observe(m, cand, 200, 20*time.Millisecond) })
	repeat(5, func() { b.Compared(m, cand, metrics.Agree) })
	b.Settle(t)
	w := window(t, b, q)
	wantReq, wantAgree := uint64(50), uint64(15)
	if w.Start.After(since) {
		wantReq, wantAgree = 20, 5
	}
	if w.Candidate.Requests != wantReq || w.Candidate.Agree != wantAgree || w.Candidate.Errors != 0 {
		t.Errorf("after the restart, window from %v (since %v): %d requests, %d errors, %d agreements; want %d, 0, %d",
			w.Start.Format(time.StampMilli), since.Format(time.StampMilli), w.Candidate.Requests, w.Candidate.Errors, w.Candidate.Agree, wantReq, wantAgree)
	}
	var n uint64
	for _, x := range w.Candidate.Buckets {
		n += x
	}
	if n != w.Candidate.Requests {
		t.Errorf("after the restart the histogram holds %d observations, want %d", n, w.Candidate.Requests)
	}
}

// unreachable: a backend that cannot be asked is an error, which the
// reconciler turns into an inconclusive analysis; never zeros.
func unreachable(t *testing.T, h Harness) {
	if h.Unreachable == nil {
		t.Skip("this provider has no server to lose")
	}
	p := h.Unreachable(t)
	m, cand, stable := names("down")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if w, err := p.Window(ctx, metrics.Query{Model: m, Candidate: cand, Stable: stable, Since: time.Now().Add(-time.Minute)}); err == nil {
		t.Fatalf("Window on an unreachable backend = %+v, nil; want an error", w)
	}
}

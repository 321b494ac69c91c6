package gitsource

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
)

// fastPoller polls every 20ms and backs off from 10ms to 80ms.
func fastPoller(src *Source) *Poller {
	return NewPoller(src, PollerConfig{
		Interval:     20 * time.Millisecond,
		BackoffBase:  10 * time.Millisecond,
		BackoffCap:   80 * time.Millisecond,
		HeadTimeout:  5 * time.Second,
		FetchTimeout: 10 * time.Second,
	})
}

// runPoller starts p and returns its events; it stops when the test ends.
func runPoller(t *testing.T, p *Poller) <-chan Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan Event)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, events) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("poller did not stop")
		}
	})
	return events
}

func nextEvent(t *testing.T, events <-chan Event, wantSHA string) Event {
	t.Helper()
	select {
	case ev := <-events:
		if ev.Revision.SHA != wantSHA {
			t.Fatalf("event for %s, want %s", ev.Revision.SHA, wantSHA)
		}
		return ev
	case <-time.After(15 * time.Second):
		t.Fatalf("no event for %s", wantSHA)
	}
	return Event{}
}

// waitStatus polls p.Status until ok accepts it.
func waitStatus(t *testing.T, p *Poller, what string, ok func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := p.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPollerEvents(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	_, url := gittest.StartDaemon(t, repo)
	first := repo.Commit("first", map[string]string{"m/a": "1", "m/b": "1"})
	src, _ := newSource(t, url, nil)
	p := fastPoller(src)
	events := runPoller(t, p)

	ev := nextEvent(t, events, first)
	if !ev.Full || ev.Previous != "" || !slices.Equal(ev.Changed, []string{"m/a", "m/b"}) {
		t.Fatalf("first event = %+v", ev)
	}
	second := repo.Commit("second", map[string]string{"m/b": "2"})
	ev = nextEvent(t, events, second)
	if ev.Full || ev.Previous != first || !slices.Equal(ev.Changed, []string{"m/b"}) {
		t.Fatalf("second event = %+v", ev)
	}
	st := waitStatus(t, p, "status after second", func(s Status) bool { return s.SHA == second })
	if st.LastError != "" || st.ConsecutiveFailures != 0 || st.LastFetch.IsZero() || st.Repo != "test" || st.Branch != gittest.Branch {
		t.Fatalf("status = %+v", st)
	}
	// Force-push to an unrelated history is just a new revision.
	third := repo.Orphan("rewrite", map[string]string{"other": "x"})
	ev = nextEvent(t, events, third)
	if !slices.Equal(ev.Changed, []string{"m/a", "m/b", "other"}) {
		t.Fatalf("force-push event = %+v", ev)
	}
}

func TestPollerTrigger(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	first := repo.Commit("first", map[string]string{"a": "1"})
	src, _ := newSource(t, repo.Bare, nil)
	p := NewPoller(src, PollerConfig{Interval: time.Hour})
	events := runPoller(t, p)
	nextEvent(t, events, first) // the first poll is immediate
	second := repo.Commit("second", map[string]string{"a": "2"})
	p.Trigger()
	start := time.Now()
	nextEvent(t, events, second)
	t.Logf("triggered fetch delivered after %v", time.Since(start))
	if st := p.Status(); time.Until(st.NextAttempt) < 30*time.Minute {
		t.Fatalf("next attempt %v, want about an hour away", st.NextAttempt)
	}
}

func TestPollerBranchDeleted(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	url, _ := gittest.StartHTTP(t, repo, false, "")
	first := repo.Commit("first", map[string]string{"a": "1"})
	src, _ := newSource(t, url, nil)
	p := fastPoller(src)
	events := runPoller(t, p)
	nextEvent(t, events, first)

	repo.DeleteBranch()
	st := waitStatus(t, p, "branch error", func(s Status) bool { return s.ConsecutiveFailures >= 2 })
	if !strings.Contains(st.LastError, "branch main not found on remote") || st.SHA != first {
		t.Fatalf("status = %+v", st)
	}
	if !st.NextAttempt.After(time.Now().Add(-time.Second)) {
		t.Fatalf("next attempt %v is in the past", st.NextAttempt)
	}
	mustRead(t, src, first, "a", "1") // the last good revision stays readable

	second := repo.Commit("second", map[string]string{"a": "2"})
	ev := nextEvent(t, events, second)
	if ev.Previous != first || !slices.Equal(ev.Changed, []string{"a"}) {
		t.Fatalf("event after recreate = %+v", ev)
	}
	waitStatus(t, p, "recovery", func(s Status) bool { return s.LastError == "" && s.ConsecutiveFailures == 0 })
}

func TestPollerUnreachableBacksOffAndRecovers(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	daemon, url := gittest.StartDaemon(t, repo)
	first := repo.Commit("first", map[string]string{"a": "1"})
	src, _ := newSource(t, url, nil)
	p := fastPoller(src)
	events := runPoller(t, p)
	nextEvent(t, events, first)

	daemon.Stop()
	st := waitStatus(t, p, "failures", func(s Status) bool { return s.ConsecutiveFailures >= 4 })
	if st.LastError == "" || st.SHA != first {
		t.Fatalf("status while down = %+v", st)
	}
	t.Logf("error while down: %s", st.LastError)
	// Backoff grows: 10ms, 20ms, 40ms, then capped at 80ms (±20%).
	if d := p.backoff(10); d < 64*time.Millisecond || d > 80*time.Millisecond {
		t.Fatalf("backoff(10) = %v, want within the 80ms cap", d)
	}
	if d := p.backoff(1); d < 20*time.Millisecond {
		t.Fatalf("backoff(1) = %v, want at least the interval", d)
	}
	mustRead(t, src, first, "a", "1")

	second := repo.Commit("second", map[string]string{"a": "2"})
	daemon.Start()
	nextEvent(t, events, second)
	waitStatus(t, p, "recovery", func(s Status) bool { return s.LastError == "" && s.ConsecutiveFailures == 0 })
}

func TestBackoffDefaults(t *testing.T) {
	t.Parallel()
	p := &Poller{cfg: PollerConfig{}}
	p.cfg.withDefaults()
	for n, want := range map[int]time.Duration{1: time.Second, 3: 4 * time.Second, 8: DefaultBackoffCap, 1000: DefaultBackoffCap} {
		d := p.backoff(n)
		lo := max(time.Duration(float64(want)*0.8), DefaultInterval)
		if d < lo || d > min(time.Duration(float64(want)*1.2), DefaultBackoffCap) {
			t.Errorf("backoff(%d) = %v, want about %v", n, d, want)
		}
	}
}

// TestHeadFetchLatency measures what a one-file commit costs to notice and
// fetch over git daemon. It logs and never asserts on time.
func TestHeadFetchLatency(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	_, url := gittest.StartDaemon(t, repo)
	src, _ := newSource(t, url, nil)
	mustFetch(t, src, repo.Commit("base", map[string]string{"f": "0"}))
	const n = 5
	var head, fetch time.Duration
	for i := range n {
		sha := repo.Commit("c", map[string]string{"f": string(rune('a' + i))})
		start := time.Now()
		mustHead(t, src, sha)
		head += time.Since(start)
		start = time.Now()
		mustFetch(t, src, sha)
		fetch += time.Since(start)
	}
	t.Logf("git daemon, one-file commit: Head %v, Fetch %v (mean of %d)", head/n, fetch/n, n)
}

// BenchmarkHeadFetch measures Head+Fetch of a one-file commit over git
// daemon (the commit itself is made with the timer stopped).
func BenchmarkHeadFetch(b *testing.B) {
	repo := gittest.NewRepo(b)
	_, url := gittest.StartDaemon(b, repo)
	src, _ := newSource(b, url, nil)
	mustFetch(b, src, repo.Commit("base", map[string]string{"f": "0"}))
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		sha := repo.Commit("c", map[string]string{"f": strconv.Itoa(i)})
		b.StartTimer()
		mustHead(b, src, sha)
		mustFetch(b, src, sha)
	}
}

// TestPollerRunAgainDeliversHead: a second Run (a new leadership term, a
// new consumer) delivers the head again, in full, although an earlier Run
// delivered it.
func TestPollerRunAgainDeliversHead(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	_, url := gittest.StartDaemon(t, repo)
	head := repo.Commit("first", map[string]string{"m/a": "1"})
	src, _ := newSource(t, url, nil)
	p := fastPoller(src)
	for term := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		events := make(chan Event)
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, events) }()
		select {
		case ev := <-events:
			if ev.Revision.SHA != head || !ev.Full || ev.Previous != "" {
				t.Errorf("term %d: first event %+v, want the head in full", term, ev)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("term %d: the head was not delivered", term)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("term %d: Run = %v, want context.Canceled", term, err)
		}
	}
}

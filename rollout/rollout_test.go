package rollout

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/metrics"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func spec(strategy manifest.Strategy, mods ...func(*manifest.Rollout)) manifest.Rollout {
	r := manifest.Rollout{
		Strategy: strategy, Steps: []int{10, 50, 100}, Interval: manifest.Duration(10 * time.Second),
		Promotion: manifest.PromotionAuto, ProgressDeadline: manifest.Duration(time.Minute), MirrorPercent: 100,
		Analysis: &manifest.Analysis{MinRequests: 20, MaxErrorRate: 1, MaxLatencyRatio: 1.5, FailureLimit: 2},
	}
	for _, m := range mods {
		m(&r)
	}
	return r
}

func manual(r *manifest.Rollout)    { r.Promotion = manifest.PromotionManual }
func agreement(r *manifest.Rollout) { r.Analysis.MinAgreement = 95 }

// window builds a measured window: the candidate served n requests with
// errs failures at latency lat, and agreed on agree of compared
// predictions; the stable version served 10n requests at 1ms.
func window(n, errs int, lat time.Duration, agree, compared int) *metrics.Window {
	var c, s metrics.Stats
	for i := range n {
		code := 200
		if i < errs {
			code = 500
		}
		c.Observe(code, lat)
	}
	for range 10 * n {
		s.Observe(200, time.Millisecond)
	}
	for i := range compared {
		if i < agree {
			c.Compared(metrics.Agree)
		} else {
			c.Compared(metrics.Disagree)
		}
	}
	end := t0.Add(time.Hour)
	return &metrics.Window{Start: t0, End: end, Candidate: c.Snapshot(end), Stable: s.Snapshot(end)}
}

var (
	good  = window(100, 0, time.Millisecond, 100, 100)
	quiet = window(5, 0, time.Millisecond, 5, 5)
)

func TestStep(t *testing.T) {
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	progressing := State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Step: 0, Weight: 10, Since: t0, Started: t0}
	tests := []struct {
		name   string
		spec   manifest.Rollout
		state  State
		obs    Observations
		now    time.Time
		want   State
		events []string // kinds
	}{
		{"first version becomes stable at once", spec(manifest.StrategyCanary), State{},
			Observations{Desired: "m-1"}, t0,
			State{Stable: "m-1", Phase: Idle}, []string{"deploy"}},
		{"no buildable version changes nothing", spec(manifest.StrategyCanary), State{Stable: "m-1", Phase: Idle},
			Observations{}, t0, State{Stable: "m-1", Phase: Idle}, nil},
		{"same version is idle", spec(manifest.StrategyCanary), State{Stable: "m-1", Phase: Idle},
			Observations{Desired: "m-1"}, t0, State{Stable: "m-1", Phase: Idle}, nil},
		{"new version deploys with no traffic", spec(manifest.StrategyCanary), State{Stable: "m-1", Phase: Idle},
			Observations{Desired: "m-2"}, t0,
			State{Stable: "m-1", Candidate: "m-2", Phase: Deploying, Since: t0, Started: t0}, []string{"deploy"}},
		{"ready canary goes to step 1", spec(manifest.StrategyCanary), State{Stable: "m-1", Candidate: "m-2", Phase: Deploying, Started: t0},
			Observations{Desired: "m-2", CandidateReady: true}, at(time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 10, Since: at(time.Second), Started: t0}, []string{"step"}},
		{"ready direct promotes", spec(manifest.StrategyDirect), State{Stable: "m-1", Candidate: "m-2", Phase: Deploying, Started: t0},
			Observations{Desired: "m-2", CandidateReady: true}, at(time.Second),
			State{Stable: "m-2", Phase: Idle, Since: at(time.Second), Started: t0}, []string{"promote"}},
		{"ready shadow verifies on mirror", spec(manifest.StrategyShadow), State{Stable: "m-1", Candidate: "m-2", Phase: Deploying, Started: t0},
			Observations{Desired: "m-2", CandidateReady: true}, at(time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Since: at(time.Second), Started: t0}, []string{"step"}},
		{"not ready within deadline rolls back", spec(manifest.StrategyCanary), State{Stable: "m-1", Candidate: "m-2", Phase: Deploying, Started: t0},
			Observations{Desired: "m-2"}, at(time.Minute),
			State{Stable: "m-1", Phase: RolledBack, RolledBack: "m-2", Since: at(time.Minute), Started: t0}, []string{"rollback"}},
		{"not ready yet waits", spec(manifest.StrategyCanary), State{Stable: "m-1", Candidate: "m-2", Phase: Deploying, Started: t0},
			Observations{Desired: "m-2"}, at(30 * time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Deploying, Started: t0}, nil},
		{"crashing candidate rolls back at once", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: false, CandidateFailure: "exit 1"}, at(time.Second),
			State{Stable: "m-1", Phase: RolledBack, RolledBack: "m-2", Since: at(time.Second), Started: t0}, []string{"rollback"}},
		{"step holds before the interval", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Metrics: good}, at(5 * time.Second),
			progressing, nil},
		{"passing step advances", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Metrics: good}, at(10 * time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Step: 1, Weight: 50, Since: at(10 * time.Second), Started: t0}, []string{"analysis", "step"}},
		{"passing last step promotes", spec(manifest.StrategyCanary), State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Step: 1, Weight: 50, Since: t0, Started: t0},
			Observations{Desired: "m-2", CandidateReady: true, Metrics: good}, at(10 * time.Second),
			State{Stable: "m-2", Phase: Idle, Since: at(10 * time.Second), Started: t0}, []string{"analysis", "promote"}},
		{"manual gate waits", spec(manifest.StrategyCanary, manual), State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Step: 1, Weight: 50, Since: t0, Started: t0},
			Observations{Desired: "m-2", CandidateReady: true, Metrics: good}, at(10 * time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: AwaitingPromotion, Step: 1, Weight: 50, Since: at(10 * time.Second), Started: t0}, []string{"analysis", "hold"}},
		{"manual gate promotes on command", spec(manifest.StrategyCanary, manual), State{Stable: "m-1", Candidate: "m-2", Phase: AwaitingPromotion, Step: 1, Weight: 50, Since: t0, Started: t0},
			Observations{Desired: "m-2", CandidateReady: true, Command: Promote}, at(time.Second),
			State{Stable: "m-2", Phase: Idle, Since: at(time.Second), Started: t0}, []string{"promote"}},
		{"awaiting promotion still rolls back on failures", spec(manifest.StrategyCanary, manual), State{Stable: "m-1", Candidate: "m-2", Phase: AwaitingPromotion, Step: 1, Weight: 50, Since: t0, Started: t0, Failures: 1},
			Observations{Desired: "m-2", CandidateReady: true, Metrics: window(100, 50, time.Millisecond, 0, 0)}, at(10 * time.Second),
			State{Stable: "m-1", Phase: RolledBack, RolledBack: "m-2", Since: at(10 * time.Second), Started: t0}, []string{"analysis", "rollback"}},
		{"too little traffic holds, never fails", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Metrics: window(5, 5, time.Second, 0, 0)}, at(time.Hour),
			State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 10, Since: t0, Started: t0}, []string{"analysis"}},
		{"no metrics holds", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: true}, at(time.Hour),
			progressing, []string{"analysis"}},
		{"first failure holds the step with a new window", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Metrics: window(100, 10, time.Millisecond, 0, 0)}, at(10 * time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 10, Since: at(10 * time.Second), Started: t0, Failures: 1}, []string{"analysis"}},
		{"failureLimit failures roll back", spec(manifest.StrategyCanary), State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 10, Since: t0, Started: t0, Failures: 1},
			Observations{Desired: "m-2", CandidateReady: true, Metrics: window(100, 10, time.Millisecond, 0, 0)}, at(10 * time.Second),
			State{Stable: "m-1", Phase: RolledBack, RolledBack: "m-2", Since: at(10 * time.Second), Started: t0}, []string{"analysis", "rollback"}},
		{"a pass resets the failure count", spec(manifest.StrategyCanary), State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 10, Since: t0, Started: t0, Failures: 1},
			Observations{Desired: "m-2", CandidateReady: true, Metrics: good}, at(10 * time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Step: 1, Weight: 50, Since: at(10 * time.Second), Started: t0}, []string{"analysis", "step"}},
		{"slow candidate fails", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Metrics: window(100, 0, 200*time.Millisecond, 0, 0)}, at(10 * time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 10, Since: at(10 * time.Second), Started: t0, Failures: 1}, []string{"analysis"}},
		{"disagreeing candidate fails", spec(manifest.StrategyCanary, agreement), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Metrics: window(100, 0, time.Millisecond, 80, 100)}, at(10 * time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 10, Since: at(10 * time.Second), Started: t0, Failures: 1}, []string{"analysis"}},
		{"too few comparisons hold", spec(manifest.StrategyCanary, agreement), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Metrics: window(100, 0, time.Millisecond, 5, 5)}, at(10 * time.Second),
			progressing, []string{"analysis"}},
		{"a short window holds (restart mid-step)", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Metrics: shortWindow(good, 3*time.Second)}, at(10 * time.Second),
			progressing, []string{"analysis"}},
		{"pause holds", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Metrics: good, Command: Pause}, at(10 * time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 10, Since: t0, Started: t0, Paused: true}, []string{"pause"}},
		{"paused stays put", spec(manifest.StrategyCanary), withPaused(progressing),
			Observations{Desired: "m-2", CandidateReady: true, Metrics: window(100, 100, time.Millisecond, 0, 0)}, at(time.Hour),
			withPaused(progressing), nil},
		{"resume starts a fresh window", spec(manifest.StrategyCanary), withPaused(progressing),
			Observations{Desired: "m-2", CandidateReady: true, Metrics: good, Command: Resume}, at(time.Hour),
			State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 10, Since: at(time.Hour), Started: t0}, []string{"resume"}},
		{"rollback command", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Command: Rollback}, at(time.Second),
			State{Stable: "m-1", Phase: RolledBack, RolledBack: "m-2", Since: at(time.Second), Started: t0}, []string{"rollback"}},
		{"promote command skips the steps", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-2", CandidateReady: true, Command: Promote}, at(time.Second),
			State{Stable: "m-2", Phase: Idle, Since: at(time.Second), Started: t0}, []string{"promote"}},
		{"promote of a candidate not ready is refused", spec(manifest.StrategyCanary), State{Stable: "m-1", Candidate: "m-2", Phase: Deploying, Started: t0},
			Observations{Desired: "m-2", Command: Promote}, at(time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Deploying, Started: t0}, []string{"ignored"}},
		{"rolled-back version is not retried", spec(manifest.StrategyCanary), State{Stable: "m-1", Phase: RolledBack, RolledBack: "m-2"},
			Observations{Desired: "m-2", CandidateReady: true}, at(time.Second),
			State{Stable: "m-1", Phase: RolledBack, RolledBack: "m-2", Reason: "m-2 was rolled back; commit a new model or promote it to try again"}, nil},
		{"promote retries a rolled-back version", spec(manifest.StrategyCanary), State{Stable: "m-1", Phase: RolledBack, RolledBack: "m-2"},
			Observations{Desired: "m-2", Command: Promote}, at(time.Second),
			State{Stable: "m-1", Candidate: "m-2", Phase: Deploying, Since: at(time.Second), Started: at(time.Second)}, []string{"promote", "deploy"}},
		{"a new commit after a rollback rolls out", spec(manifest.StrategyCanary), State{Stable: "m-1", Phase: RolledBack, RolledBack: "m-2"},
			Observations{Desired: "m-3"}, at(time.Second),
			State{Stable: "m-1", Candidate: "m-3", Phase: Deploying, RolledBack: "m-2", Since: at(time.Second), Started: at(time.Second)}, []string{"deploy"}},
		{"git revert to stable cancels the candidate", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-1"}, at(time.Second),
			State{Stable: "m-1", Phase: Idle, Since: at(time.Second), Started: t0}, []string{"cancel"}},
		{"a newer commit supersedes the candidate", spec(manifest.StrategyCanary), progressing,
			Observations{Desired: "m-3"}, at(time.Second),
			State{Stable: "m-1", Candidate: "m-3", Phase: Deploying, Since: at(time.Second), Started: at(time.Second)}, []string{"cancel", "deploy"}},
		{"blueGreen keeps the old version warm", spec(manifest.StrategyBlueGreen), State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Since: t0, Started: t0},
			Observations{Desired: "m-2", CandidateReady: true, Metrics: good}, at(10 * time.Second),
			State{Stable: "m-2", Previous: "m-1", Phase: Idle, Since: at(10 * time.Second), Started: t0}, []string{"analysis", "promote"}},
		{"blueGreen rollback is instant", spec(manifest.StrategyBlueGreen), State{Stable: "m-2", Previous: "m-1", Phase: Idle},
			Observations{Desired: "m-2", Command: Rollback}, at(time.Second),
			State{Stable: "m-1", Phase: RolledBack, RolledBack: "m-2"}, []string{"rollback"}},
		{"a failing stable is replaced at once", spec(manifest.StrategyCanary), State{Stable: "m-1", Phase: Idle},
			Observations{Desired: "m-2", StableFailed: true}, at(time.Second),
			State{Stable: "m-2", Phase: Idle}, []string{"promote"}},
		{"commands without a rollout are ignored", spec(manifest.StrategyCanary), State{Stable: "m-1", Phase: Idle},
			Observations{Desired: "m-1", Command: Promote}, at(time.Second),
			State{Stable: "m-1", Phase: Idle}, []string{"ignored"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, events := Step(tt.spec, tt.state, tt.obs, tt.now)
			got.Analysis = nil // checked in the analysis tests
			want := tt.want
			if want.Reason == "" {
				got.Reason = ""
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("state:\n got %+v\nwant %+v", got, want)
			}
			var kinds []string
			for _, e := range events {
				kinds = append(kinds, e.Kind)
			}
			if strings.Join(kinds, ",") != strings.Join(tt.events, ",") {
				t.Errorf("events %v, want %v (%+v)", kinds, tt.events, events)
			}
		})
	}
}

func withPaused(s State) State { s.Paused = true; return s }

func shortWindow(w *metrics.Window, d time.Duration) *metrics.Window {
	c := *w
	c.Start = c.End.Add(-d)
	return &c
}

// TestCanaryScenario drives a whole canary through its steps with a
// restart (state serialized and read back) in the middle of step 2.
func TestCanaryScenario(t *testing.T) {
	sp := spec(manifest.StrategyCanary, func(r *manifest.Rollout) { r.Steps = []int{10, 30, 60, 100} })
	s, now := State{Stable: "m-1", Phase: Idle}, t0
	advance := func(o Observations, d time.Duration) {
		t.Helper()
		now = now.Add(d)
		s, _ = Step(sp, s, o, now)
	}
	advance(Observations{Desired: "m-2"}, 0)
	advance(Observations{Desired: "m-2", CandidateReady: true}, time.Second)
	var weights []int
	for range 10 {
		weights = append(weights, s.Weight)
		if s.Phase != Progressing {
			break
		}
		if s.Step == 1 { // restart: the state survives JSON
			data, _ := json.Marshal(s)
			var back State
			if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, s) {
				t.Fatalf("state does not survive a restart: %v\n%+v\n%+v", err, back, s)
			}
			s = back
		}
		advance(Observations{Desired: "m-2", CandidateReady: true, Metrics: good}, 10*time.Second)
	}
	if s.Phase != Idle || s.Stable != "m-2" || !reflect.DeepEqual(weights, []int{10, 30, 60, 0}) {
		t.Fatalf("phase %s stable %s weights %v", s.Phase, s.Stable, weights)
	}
}

// TestNoTrafficThenTraffic holds on no data and promotes once traffic
// arrives.
func TestNoTrafficThenTraffic(t *testing.T) {
	sp := spec(manifest.StrategyCanary, func(r *manifest.Rollout) { r.Steps = []int{50, 100} })
	s := State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 50, Since: t0, Started: t0}
	for i := 1; i <= 30; i++ {
		s, _ = Step(sp, s, Observations{Desired: "m-2", CandidateReady: true, Metrics: quiet}, t0.Add(time.Duration(i)*time.Minute))
		if s.Phase != Progressing || s.Failures != 0 {
			t.Fatalf("after %d minutes without traffic: %+v", i, s)
		}
	}
	s, _ = Step(sp, s, Observations{Desired: "m-2", CandidateReady: true, Metrics: good}, t0.Add(time.Hour))
	if s.Stable != "m-2" || s.Phase != Idle {
		t.Fatalf("did not promote once traffic arrived: %+v", s)
	}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name string
		spec manifest.Rollout
		s    State
		want Plan
	}{
		{"nothing", spec(manifest.StrategyCanary), State{}, Plan{Traffic: map[string]int{}}},
		{"stable only", spec(manifest.StrategyCanary), State{Stable: "a", Phase: Idle},
			Plan{Versions: []string{"a"}, Traffic: map[string]int{"a": 100}}},
		{"deploying", spec(manifest.StrategyCanary), State{Stable: "a", Candidate: "b", Phase: Deploying},
			Plan{Versions: []string{"a", "b"}, Traffic: map[string]int{"a": 100, "b": 0}}},
		{"canary step", spec(manifest.StrategyCanary), State{Stable: "a", Candidate: "b", Phase: Progressing, Weight: 10},
			Plan{Versions: []string{"a", "b"}, Traffic: map[string]int{"a": 90, "b": 10}, Compared: "b"}},
		{"shadow", spec(manifest.StrategyShadow, func(r *manifest.Rollout) { r.MirrorPercent = 40 }), State{Stable: "a", Candidate: "b", Phase: Progressing},
			Plan{Versions: []string{"a", "b"}, Traffic: map[string]int{"a": 100, "b": 0}, Mirrored: "b", MirrorPercent: 40}},
		{"blueGreen warm standby", spec(manifest.StrategyBlueGreen), State{Stable: "b", Previous: "a", Phase: Idle},
			Plan{Versions: []string{"b", "a"}, Traffic: map[string]int{"b": 100, "a": 0}}},
	}
	for _, tt := range tests {
		if got := PlanFor(tt.spec, tt.s); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestAnalyze(t *testing.T) {
	a := &manifest.Analysis{MinRequests: 20, MaxErrorRate: 1, MaxLatencyP99: manifest.Duration(100 * time.Millisecond), MaxLatencyRatio: 1.5, MinAgreement: 90, FailureLimit: 2}
	tests := []struct {
		name    string
		w       *metrics.Window
		verdict Verdict
		summary string
	}{
		{"good", good, Pass, "100 requests, all checks passed"},
		{"too few", quiet, Inconclusive, "waiting for data: 5/20 requests, 5/20 compared predictions"},
		{"errors", window(100, 5, time.Millisecond, 100, 100), Fail, "errorRate 5.00% > 1.00%"},
		{"slow", window(100, 0, 200*time.Millisecond, 100, 100), Fail, "latencyP99"},
		{"disagrees", window(100, 0, time.Millisecond, 50, 100), Fail, "agreement 50.0% < 90.0%"},
		{"sub-ms ratio noise passes", window(100, 0, 1900*time.Microsecond, 100, 100), Pass, ""},
		// Regression: a canary answering only 500s has no prediction to
		// compare; it failed to fail and held forever (found by e2e).
		{"only errors, nothing compared", window(100, 100, time.Millisecond, 0, 0), Fail, "errorRate 100.00% > 1.00%"},
		{"few requests with errors", window(10, 10, time.Millisecond, 0, 0), Inconclusive, "waiting for data: 10/20"},
	}
	for _, tt := range tests {
		r := Analyze(a, *tt.w, t0)
		if r.Verdict != tt.verdict || !strings.Contains(r.Summary, tt.summary) {
			t.Errorf("%s: %s %q, want %s %q (%+v)", tt.name, r.Verdict, r.Summary, tt.verdict, tt.summary, r.Checks)
		}
	}
}

// TestLatencyRatioSmallCanary: at a 10% step the candidate has a tenth of
// the stable version's requests, so its p99 is its slowest request. One
// stalled request must not fail it (it rolled good versions back in the
// e2e benchmark); a slowness shared by several requests still does.
func TestLatencyRatioSmallCanary(t *testing.T) {
	a := &manifest.Analysis{MinRequests: 20, MaxErrorRate: 1, MaxLatencyRatio: 1.5, FailureLimit: 2}
	win := func(candSlow int) metrics.Window {
		var c, s metrics.Stats
		for i := range 50 {
			lat := 2 * time.Millisecond
			if i < candSlow {
				lat = 40 * time.Millisecond
			}
			c.Observe(200, lat)
		}
		for i := range 500 {
			lat := 2 * time.Millisecond
			if i < 2 {
				lat = 40 * time.Millisecond
			}
			s.Observe(200, lat)
		}
		end := t0.Add(time.Minute)
		return metrics.Window{Start: t0, End: end, Candidate: c.Snapshot(end), Stable: s.Snapshot(end)}
	}
	if r := Analyze(a, win(1), t0); r.Verdict != Pass {
		t.Errorf("one stalled request of 50: %s %q", r.Verdict, r.Summary)
	}
	if r := Analyze(a, win(5), t0); r.Verdict != Fail || !strings.Contains(r.Summary, "latencyRatio") {
		t.Errorf("5 slow requests of 50: %s %q", r.Verdict, r.Summary)
	}
}

func BenchmarkStep(b *testing.B) {
	sp := spec(manifest.StrategyCanary)
	s := State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Weight: 10, Since: t0, Started: t0}
	o := Observations{Desired: "m-2", CandidateReady: true, Metrics: good}
	for b.Loop() {
		Step(sp, s, o, t0.Add(10*time.Second))
	}
}

// TestWindowSlack: a window that began a moment after the step (when the
// weights took effect) still counts; one measured for much less does not.
func TestWindowSlack(t *testing.T) {
	sp := spec(manifest.StrategyCanary) // interval 10s
	s := State{Stable: "m-1", Candidate: "m-2", Phase: Progressing, Step: 0, Weight: 10, Since: t0, Started: t0}
	now := t0.Add(10 * time.Second)
	for _, tc := range []struct {
		measured time.Duration
		advance  bool
	}{{9500 * time.Millisecond, true}, {9 * time.Second, true}, {8 * time.Second, false}} {
		w := *good
		w.Start, w.End = now.Add(-tc.measured), now
		next, _ := Step(sp, s, Observations{Desired: "m-2", CandidateReady: true, Metrics: &w}, now)
		if advanced := next.Step == 1; advanced != tc.advance {
			t.Errorf("window of %s: advanced %v, want %v (%s)", tc.measured, advanced, tc.advance, next.Reason)
		}
	}
}

package e2e

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
)

// The rollout scenarios: real daemons, real git servers and real Python
// model servers, purpose-made good and bad models, and ≥ 100 requests a
// second against the router for the whole rollout. Outcomes are read from
// the API (/api/v1/models/{name}), the X-Merlin-Version of every answer and
// /metrics.

const (
	loadRPS     = 150
	loadWorkers = 32
)

// rolloutEnv is one daemon watching one repository.
type rolloutEnv struct {
	t    testing.TB
	repo *gittest.Repo
	m    *merlinProc
}

// newRolloutEnv starts a daemon over a fresh repository; workers > 0 sets
// the processes per model server.
func newRolloutEnv(t testing.TB, workers int, configure ...func(*merlinProc)) *rolloutEnv {
	t.Helper()
	requirePython(t)
	repo := gittest.NewRepo(t)
	_, url := gittest.StartDaemon(t, repo)
	m := newMerlin(t, url)
	if workers > 0 {
		m.withWorkers(workers)
	}
	for _, c := range configure {
		c(m)
	}
	m.start()
	return &rolloutEnv{t: t, repo: repo, m: m}
}

// commit commits a model directory as the model `name`, with a manifest
// of the given type and rollout settings.
func (e *rolloutEnv) commit(name, typ, modelDir, rollout string) {
	e.t.Helper()
	e.repo.CommitDir(fmt.Sprintf("%s: %s model %s", name, typ, modelDir), modelSource(e.t, name, typ, modelDir, rollout), "models/"+name)
}

// stableIris deploys the iris example as the first version of name and
// waits for it to serve.
func (e *rolloutEnv) stableIris(name, rollout string) string {
	e.t.Helper()
	e.commit(name, "sklearn", examplesDir(model)+"/model", rollout)
	return e.m.waitStable(name)
}

// holdsFor checks cond on every poll for d.
func (e *rolloutEnv) holdsFor(name string, d time.Duration, cond func(rolloutView) error) rolloutView {
	e.t.Helper()
	var v rolloutView
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		var err error
		if v, err = e.m.rollout(name); err != nil {
			e.t.Fatal(err)
		}
		if err := cond(v); err != nil {
			e.t.Fatalf("%v: %s", err, v)
		}
	}
	return v
}

// atStep returns a condition: the candidate is at canary step (1-based)
// with weight percent of the traffic.
func atStep(cand string, step, weight int) func(rolloutView) error {
	return func(v rolloutView) error {
		c, w := v.role("candidate")
		if c != cand || v.Phase != "Progressing" || v.Step != step || w != weight {
			return fmt.Errorf("want %s at step %d with %d%%", cand, step, weight)
		}
		return nil
	}
}

// promoted is satisfied once cand is the stable version with all traffic.
func promoted(cand string) func(rolloutView) error {
	return func(v rolloutView) error {
		s, w := v.role("stable")
		if c, _ := v.role("candidate"); c != "" || s != cand || w != 100 || v.Phase != "Idle" {
			return fmt.Errorf("%s not promoted", cand)
		}
		return nil
	}
}

// splitAt measures the share of answers cand gives over a window, and
// checks that it is weight% (within tolerance points) and that the step
// did not change meanwhile.
func (e *rolloutEnv) splitAt(tr *traffic, name, cand string, step, weight int, tolerance float64) {
	e.t.Helper()
	before := tr.tally()
	time.Sleep(2 * time.Second)
	w := tr.tally().sub(before)
	if v, err := e.m.rollout(name); err != nil || atStep(cand, step, weight)(v) != nil {
		e.t.Fatalf("the step changed while measuring its split: %s %v", v, err)
	}
	share := 100 * w.share(cand)
	e.t.Logf("step %d: %s answered %.1f%% of %d requests (weight %d%%)", step, cand, share, w.total(), weight)
	if math.Abs(share-float64(weight)) > tolerance {
		e.t.Errorf("step %d: %s answered %.1f%% of the requests, want %d%% ± %.0f", step, cand, share, weight, tolerance)
	}
}

// onlyAfter checks that every request sent after a traffic switch (seen
// in the API at `at`) was answered by version. Requests sent before it may
// still be finishing on the old version: they drain.
func onlyAfter(t testing.TB, tr *traffic, at time.Time, version string) {
	t.Helper()
	time.Sleep(2 * time.Second)
	c := tr.tally()
	for v, last := range c.Last {
		if v != version && last.After(at) {
			t.Errorf("%s answered a request sent %s after the switch to %s", v, last.Sub(at).Round(time.Millisecond), version)
		}
	}
	if !c.Last[version].After(at) {
		t.Errorf("%s answered no request after the switch", version)
	}
}

// checkEvents checks that the events of version include kinds in order.
func checkEvents(t testing.TB, v rolloutView, version string, kinds ...string) {
	t.Helper()
	var got []string
	for _, e := range v.Events {
		if e.Version == version && e.Kind != "analysis" {
			got = append(got, e.Kind)
		}
	}
	if !slices.Equal(got, kinds) {
		t.Errorf("events of %s: %v, want %v\n%+v", version, got, kinds, v.Events)
	}
}

// checkMetrics checks the rollout transitions counted in /metrics.
func checkMetrics(t testing.TB, m *merlinProc, name string, want map[string]float64) {
	t.Helper()
	got, err := m.rolloutEvents(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("merlin_rollout_events_total{model=%q}: %v", name, got)
	for kind, n := range want {
		if got[kind] < n {
			t.Errorf("merlin_rollout_events_total{model=%q,kind=%q} = %v, want ≥ %v", name, kind, got[kind], n)
		}
	}
}

// TestRolloutCanaryPromotes rolls a retrained model through every canary
// step under load: 10% then 50% of the answers come from it, then all.
func TestRolloutCanaryPromotes(t *testing.T) {
	t.Parallel()
	e := newRolloutEnv(t, 0)
	const name = "good"
	stable := e.stableIris(name, goodCanaryYAML)
	retrained := trainIris(t, irisSpec{Seed: 7, C: 1})[0]
	tr := startTraffic(t, e.m, name, loadRPS, loadWorkers)
	time.Sleep(time.Second)
	e.commit(name, "sklearn", retrained, goodCanaryYAML)
	cand := e.m.waitCandidate(name)

	e.m.waitRollout(name, "canary step 1", 60*time.Second, atStep(cand, 1, 10))
	e.splitAt(tr, name, cand, 1, 10, 7)
	e.m.waitRollout(name, "canary step 2", 30*time.Second, atStep(cand, 2, 50))
	e.splitAt(tr, name, cand, 2, 50, 15)
	v := e.m.waitRollout(name, "promotion", 30*time.Second, promoted(cand))
	onlyAfter(t, tr, time.Now(), cand)
	c := tr.report(t)
	if c.OK[stable] == 0 || c.OK[cand] == 0 {
		t.Errorf("the load did not see both versions: %v", c.OK)
	}
	checkEvents(t, v, cand, "deploy", "step", "step", "promote")
	if v.Analysis == nil || v.Analysis.Verdict != "pass" {
		t.Errorf("last analysis: %+v", v.Analysis)
	}
	checkMetrics(t, e.m, name, map[string]float64{"deploy": 2, "step": 2, "promote": 1, "analysis": 2})
}

// TestRolloutRollsBackBadVersions rolls out purpose-made bad models under
// load; each is rolled back by the check it fails, and afterwards every
// answer comes from the stable version again.
func TestRolloutRollsBackBadVersions(t *testing.T) {
	for _, tc := range []struct {
		kind, strategy, check string
	}{
		{kindCrash, "canary", "errorRate"},
		{kindSlow, "canary", "latency"},
		{kindWrong, "canary", "agreement"},
		{kindWrong, "shadow", "agreement"},
	} {
		t.Run(tc.kind+"-"+tc.strategy, func(t *testing.T) {
			t.Parallel()
			workers := 0
			if tc.kind == kindSlow {
				workers = 4 // 20 slow predictions a second: the canary's share of the load
			}
			e := newRolloutEnv(t, workers)
			name := tc.kind + "-" + tc.strategy
			rollout := canaryYAML
			if tc.strategy == "shadow" {
				rollout = shadowYAML
			}
			stable := e.stableIris(name, rollout)
			tr := startTraffic(t, e.m, name, loadRPS, loadWorkers)
			out := e.rollOutBad(tr, name, tc.kind, rollout)
			v := out.view

			onlyAfter(t, tr, out.observed, stable)
			c := tr.report(t, out.bad)
			seen := "clients never saw it"
			if !c.First[out.bad].IsZero() {
				seen = fmt.Sprintf("clients sent it requests for %s", c.Last[out.bad].Sub(c.First[out.bad]).Round(100*time.Millisecond))
			}
			t.Logf("%s: first traffic → rolled back in %s; %s; reason: %s", out.bad, out.rollbackAfter().Round(100*time.Millisecond), seen, out.reason)
			if v.RolledBack != out.bad {
				t.Errorf("rolledBack = %q, want %s", v.RolledBack, out.bad)
			}
			if v.Analysis == nil || v.Analysis.Verdict != "fail" || !strings.Contains(v.Analysis.Summary, tc.check) {
				t.Errorf("last analysis %+v, want a failed %s check", v.Analysis, tc.check)
			}
			if !strings.Contains(out.reason, "analysis failed 2 times") || !strings.Contains(out.reason, tc.check) {
				t.Errorf("rollback reason %q, want two failed %s checks", out.reason, tc.check)
			}
			checkEvents(t, v, out.bad, "deploy", "step", "rollback")
			switch {
			case tc.strategy == "shadow" && (c.OK[out.bad] != 0 || c.Failed[out.bad] != 0):
				t.Errorf("clients were answered by the shadow %s: %d", out.bad, c.OK[out.bad]+c.Failed[out.bad])
			case tc.strategy == "canary" && c.OK[out.bad]+c.Failed[out.bad] == 0:
				t.Errorf("the canary %s answered no client", out.bad)
			case tc.kind != kindCrash && c.Failed[out.bad] != 0:
				t.Errorf("%d requests failed on %s", c.Failed[out.bad], out.bad)
			}
			checkMetrics(t, e.m, name, map[string]float64{"deploy": 2, "step": 1, "rollback": 1, "analysis": 2})
		})
	}
}

// badOutcome is how a bad version's rollout ended.
type badOutcome struct {
	bad    string
	view   rolloutView
	reason string
	// firstTraffic is when the bad version was given traffic (its first
	// step); rolledBack when all traffic was back on stable (daemon clock).
	firstTraffic, rolledBack time.Time
	// observed is when the API showed the rollback (client clock).
	observed time.Time
}

func (o badOutcome) rollbackAfter() time.Duration { return o.rolledBack.Sub(o.firstTraffic) }

// rollOutBad commits a purpose-made bad model of kind over the serving
// iris model and waits for its rollback.
func (e *rolloutEnv) rollOutBad(tr *traffic, name, kind, rollout string) badOutcome {
	e.t.Helper()
	stable := e.m.waitStable(name)
	e.commit(name, "pyfunc", badModel(e.t, examplesDir(model)+"/model", kind), rollout)
	out := badOutcome{bad: e.m.waitCandidate(name)}
	out.view = e.m.waitRollout(name, "the rollback of "+out.bad, 90*time.Second, func(v rolloutView) error {
		s, w := v.role("stable")
		if v.Phase != "RolledBack" || s != stable || w != 100 || len(v.Versions) != 1 {
			return errors.New("not rolled back")
		}
		return nil
	})
	out.observed = time.Now()
	for _, ev := range out.view.Events {
		if ev.Version == out.bad && ev.Kind == "step" && out.firstTraffic.IsZero() {
			out.firstTraffic = ev.At
		}
	}
	var ok bool
	if out.rolledBack, out.reason, ok = out.view.event("rollback", out.bad); !ok || out.firstTraffic.IsZero() {
		e.t.Fatalf("no step or rollback event for %s: %+v", out.bad, out.view.Events)
	}
	return out
}

// TestRolloutHoldsWithoutTraffic: with no requests a canary step is
// inconclusive and holds (it neither fails nor passes); once traffic
// arrives the rollout completes.
func TestRolloutHoldsWithoutTraffic(t *testing.T) {
	t.Parallel()
	e := newRolloutEnv(t, 0)
	const name = "quiet"
	e.stableIris(name, goodCanaryYAML)
	e.commit(name, "sklearn", trainIris(t, irisSpec{Seed: 11, C: 1})[0], goodCanaryYAML)
	cand := e.m.waitCandidate(name)
	e.m.waitRollout(name, "canary step 1", 60*time.Second, atStep(cand, 1, 10))
	v := e.holdsFor(name, 12*time.Second, atStep(cand, 1, 10)) // more than two intervals
	if v.Analysis == nil || v.Analysis.Verdict != "inconclusive" || !strings.HasPrefix(v.Reason, "holding: ") {
		t.Fatalf("without traffic: %s", v)
	}
	for _, ev := range v.Events {
		if ev.Kind == "rollback" || strings.HasPrefix(ev.Reason, "fail") {
			t.Fatalf("judged on no data: %+v", ev)
		}
	}
	t.Logf("held without traffic: %s", v)

	tr := startTraffic(t, e.m, name, loadRPS, loadWorkers)
	v = e.m.waitRollout(name, "promotion once traffic arrives", 60*time.Second, promoted(cand))
	tr.report(t)
	checkEvents(t, v, cand, "deploy", "step", "step", "promote")
}

// TestRolloutManualPromotion: with promotion: manual the candidate waits
// at its last canary step, still judged, until `merlin promote`. The
// daemon requires an API token: the CLI without it is refused.
func TestRolloutManualPromotion(t *testing.T) {
	t.Parallel()
	const token = "e2e-api-token"
	e := newRolloutEnv(t, 0, func(m *merlinProc) { m.withAPIToken(token) })
	const name = "manual"
	stable := e.stableIris(name, manualYAML)
	tr := startTraffic(t, e.m, name, loadRPS, loadWorkers)
	e.commit(name, "sklearn", trainIris(t, irisSpec{Seed: 5, C: 1})[0], manualYAML)
	cand := e.m.waitCandidate(name)
	waiting := func(v rolloutView) error {
		c, w := v.role("candidate")
		if s, _ := v.role("stable"); v.Phase != "AwaitingPromotion" || c != cand || w != 50 || s != stable {
			return fmt.Errorf("want %s awaiting promotion at 50%%", cand)
		}
		return nil
	}
	e.m.waitRollout(name, "the promotion gate", 60*time.Second, waiting)
	v := e.holdsFor(name, 11*time.Second, waiting) // judged again meanwhile, never promoted
	if v.Analysis == nil || v.Analysis.Verdict != "pass" {
		t.Errorf("analysis while waiting: %+v", v.Analysis)
	}
	promote := func(env ...string) ([]byte, error) {
		cmd := exec.Command(bin, "promote", "--addr", e.m.api, name)
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "MERLIN_API_TOKEN=") }), env...)
		return cmd.CombinedOutput()
	}
	if out, err := promote(); err == nil || !strings.Contains(string(out), "requires an API token: set MERLIN_API_TOKEN") {
		t.Fatalf("merlin promote without the token: %v\n%s", err, out)
	}
	e.holdsFor(name, 2*time.Second, waiting) // the refused command changed nothing
	out, err := promote("MERLIN_API_TOKEN=" + token)
	if err != nil {
		t.Fatalf("merlin promote: %v\n%s", err, out)
	}
	t.Logf("merlin promote %s:\n%s", name, out)
	v = e.m.waitRollout(name, "promotion by command", 10*time.Second, promoted(cand))
	onlyAfter(t, tr, time.Now(), cand)
	tr.report(t)
	checkEvents(t, v, cand, "deploy", "step", "step", "hold", "promote")
	if _, reason, _ := v.event("promote", cand); !strings.Contains(reason, "command") {
		t.Errorf("promote reason %q", reason)
	}
}

// TestRolloutKillMidCanary kills the daemon with SIGKILL at canary step 2
// of 3: the model servers survive, the restarted daemon adopts them, the
// router serves the same split before the rollout moves on, and the
// rollout resumes at step 2 and completes.
func TestRolloutKillMidCanary(t *testing.T) {
	t.Parallel()
	e := newRolloutEnv(t, 0)
	const name = "restart"
	stable := e.stableIris(name, goodCanaryYAML)
	tr := startTraffic(t, e.m, name, loadRPS, loadWorkers)
	e.commit(name, "sklearn", trainIris(t, irisSpec{Seed: 3, C: 1})[0], goodCanaryYAML)
	cand := e.m.waitCandidate(name)
	e.m.waitRollout(name, "canary step 2", 60*time.Second, atStep(cand, 2, 50))
	pids := modelServers(e.m.stateDir)
	slices.Sort(pids)
	tr.report(t) // before the kill
	if len(pids) != 2 {
		t.Fatalf("model servers at step 2: %v, want stable and candidate", pids)
	}

	e.m.stop(syscall.SIGKILL)
	if got := modelServers(e.m.stateDir); !slices.Equal(sorted(got), pids) {
		t.Fatalf("model servers after kill -9: %v, want %v still running", got, pids)
	}
	logStart := len(e.m.log.String())
	e.m.start()
	v, err := e.m.rollout(name)
	if err != nil || atStep(cand, 2, 50)(v) != nil {
		t.Fatalf("right after the restart: %s %v", v, err)
	}
	tr = startTraffic(t, e.m, name, loadRPS, loadWorkers)
	e.splitAt(tr, name, cand, 2, 50, 15) // the restored split, before any new analysis
	e.m.waitRollout(name, "promotion after the restart", 60*time.Second, promoted(cand))
	c := tr.report(t)
	if c.OK[stable] == 0 {
		t.Errorf("after the restart the stable version answered nothing: %v", c.OK)
	}
	restartLog := e.m.log.String()[logStart:]
	if strings.Count(restartLog, "adopted running model server") != 2 || strings.Contains(restartLog, "model server started") {
		t.Errorf("the model servers were not both adopted:\n%s", restartLog)
	}
	if strings.Contains(restartLog, "event=deploy") {
		t.Errorf("the restart began the rollout again:\n%s", restartLog)
	}
}

func sorted(s []int) []int {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

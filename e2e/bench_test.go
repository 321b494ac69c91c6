package e2e

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// BenchmarkRollback measures how fast bad versions are rolled back and how
// often good ones are, on the local target under load, with the rollout
// settings of the scenarios (interval 5s, failureLimit 2, steps 10/50/100):
//
//	go test ./e2e -run '^$' -bench BenchmarkRollback -benchtime 1x -timeout 20m
//
// It prints a table: per failure kind (500s, slow, wrong labels), the time
// from the bad version's first traffic to all traffic back on stable
// (target ≤ 30 s); and the false rollbacks over 20 good rollouts run
// concurrently across 4 models (target 0).
func BenchmarkRollback(b *testing.B) {
	for range b.N {
		load := loadAverage()
		bad := benchBadVersions(b)
		good := []goodResult{benchGoodRollouts(b, 4, 5, "canary"), benchGoodRollouts(b, 4, 5, "shadow")}
		printRollbackTable(b, bad, good, load+" → "+loadAverage())
	}
}

// badRow is one measured rollback.
type badRow struct {
	kind, strategy string
	out            badOutcome
	clientSpan     time.Duration // first to last request the bad version answered
	badAnswers     int
	failed         int // client requests failed other than on the bad version
	rps            float64
}

var kindNames = map[string]string{kindCrash: "HTTP 500s", kindSlow: "slow (+200 ms)", kindWrong: "wrong labels (~20%)"}

func benchBadVersions(b *testing.B) []badRow {
	b.Helper()
	e := newRolloutEnv(b, 4) // 4 processes per server: the slow model's share of the load needs 3
	var rows []badRow
	for _, tc := range []struct{ kind, strategy string }{
		{kindCrash, "canary"}, {kindSlow, "canary"}, {kindWrong, "canary"}, {kindWrong, "shadow"},
	} {
		name := "bench-" + tc.kind + "-" + tc.strategy
		rollout := canaryYAML
		if tc.strategy == "shadow" {
			rollout = shadowYAML
		}
		e.stableIris(name, rollout)
		tr := startTraffic(b, e.m, name, loadRPS, loadWorkers)
		out := e.rollOutBad(tr, name, tc.kind, rollout)
		time.Sleep(time.Second) // let the requests still on the bad version drain
		tr.stop()
		c := tr.tally()
		r := badRow{kind: tc.kind, strategy: tc.strategy, out: out, badAnswers: c.OK[out.bad] + c.Failed[out.bad],
			failed: c.failedExcept(out.bad), rps: tr.rate()}
		if !c.First[out.bad].IsZero() {
			r.clientSpan = c.Last[out.bad].Sub(c.First[out.bad])
		}
		rows = append(rows, r)
		b.Logf("%s/%s: rolled back after %s: %s", tc.kind, tc.strategy, out.rollbackAfter().Round(100*time.Millisecond), out.reason)
	}
	return rows
}

// goodResult is the outcome of the good rollouts.
type goodResult struct {
	strategy                   string
	models, rollouts, promoted int
	rolledBack                 []string // version: reason
	other                      []string // timeouts and errors
	failedWindows              int      // failed analyses (one failure does not roll back)
	durations                  []time.Duration
	requests, failed           int
	rps                        float64
}

// benchGoodRollouts rolls `per` retrained iris models out one after the
// other on each of `models` models at once, each model under its own load,
// and counts the rollouts that were not promoted.
func benchGoodRollouts(b *testing.B, models, per int, strategy string) goodResult {
	b.Helper()
	rollout := map[string]string{"canary": canaryYAML, "shadow": shadowYAML}[strategy]
	e := newRolloutEnv(b, 0)
	var specs []irisSpec
	for i := range models * per {
		specs = append(specs, irisSpec{Seed: 100 + i, C: 1})
	}
	dirs := trainIris(b, specs...)
	names := make([]string, models)
	for i := range names {
		names[i] = fmt.Sprintf("bench-good-%s-%d", strategy, i)
		e.commit(names[i], "sklearn", examplesDir(model)+"/model", rollout)
	}
	for _, n := range names {
		e.m.waitStable(n)
	}
	res := goodResult{strategy: strategy, models: models, rollouts: models * per}
	var loads []*traffic
	for _, n := range names {
		loads = append(loads, startTraffic(b, e.m, n, 100, 16))
	}
	// One rollout at a time per model, all models at once: the next model
	// version is committed as soon as the previous one is settled.
	type follow struct {
		next  int             // rollouts committed
		seen  map[string]bool // versions already judged (and the first stable)
		since time.Time
	}
	fs := make([]*follow, models)
	for i, n := range names {
		st, _ := mustRollout(b, e.m, n).role("stable")
		fs[i] = &follow{seen: map[string]bool{st: true}}
	}
	commitNext := func(i int) {
		f := fs[i]
		e.commit(names[i], "sklearn", dirs[i*per+f.next], rollout)
		f.next++
		f.since = time.Now()
	}
	for i := range names {
		commitNext(i)
	}
	for active := models; active > 0; time.Sleep(200 * time.Millisecond) {
		active = 0
		for i, n := range names {
			f := fs[i]
			if f.next > per {
				continue
			}
			active++
			cand, d, rolledBack, failedWindows, done := goodRollout(mustRollout(b, e.m, n), f.seen)
			res.failedWindows += failedWindows
			switch {
			case done && rolledBack != "":
				res.rolledBack = append(res.rolledBack, cand+": "+rolledBack)
			case done:
				res.promoted++
				res.durations = append(res.durations, d)
			case time.Since(f.since) > 3*time.Minute:
				res.other = append(res.other, fmt.Sprintf("%s rollout %d: not settled within 3m: %s", n, f.next, mustRollout(b, e.m, n)))
			default:
				continue
			}
			f.seen[cand] = true
			if f.next == per {
				f.next++ // finished
				continue
			}
			commitNext(i)
		}
	}
	for _, tr := range loads {
		tr.stop()
		c := tr.tally()
		res.requests += c.total()
		res.failed += c.failedExcept()
		res.rps += tr.rate()
	}
	return res
}

func mustRollout(b *testing.B, m *merlinProc, name string) rolloutView {
	b.Helper()
	v, err := m.rollout(name)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// goodRollout reads the state of the newest rollout of a model from its
// view: the newest deployed version not seen before, and whether it was
// promoted (after d, from deploy to promote) or rolled back (and why),
// and how many of its analyses failed.
func goodRollout(v rolloutView, seen map[string]bool) (cand string, d time.Duration, rolledBack string, failedWindows int, done bool) {
	for i := len(v.Events) - 1; i >= 0 && cand == ""; i-- {
		if ev := v.Events[i]; ev.Kind == "deploy" && !seen[ev.Version] {
			cand = ev.Version
		}
	}
	if cand == "" {
		return "", 0, "", 0, false
	}
	for _, ev := range v.Events {
		if ev.Version == cand && ev.Kind == "analysis" && strings.HasPrefix(ev.Reason, "fail:") {
			failedWindows++
		}
	}
	if _, reason, ok := v.event("rollback", cand); ok {
		return cand, 0, reason, failedWindows, true
	}
	if at, _, ok := v.event("promote", cand); ok {
		start, _, _ := v.event("deploy", cand)
		return cand, at.Sub(start), "", failedWindows, true
	}
	return cand, 0, "", 0, false
}

// loadAverage is the machine's 1-minute load average: the figures depend
// on what else runs.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func printRollbackTable(b *testing.B, bad []badRow, goods []goodResult, load string) {
	var out strings.Builder
	fmt.Fprintf(&out, "\nRollback of bad versions (local target; interval 5s, failureLimit 2, steps 10/50/100, %d rps load; machine: %d CPUs, load average %s)\n",
		loadRPS, runtime.NumCPU(), load)
	tw := tabwriter.NewWriter(&out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "failure\tstrategy\tfirst traffic → 100% stable\ttarget\tclients on bad version\tbad answers\tother failed requests\tload\tfailed check")
	for _, r := range bad {
		d := r.out.rollbackAfter()
		verdict := "ok"
		if d > 30*time.Second {
			verdict = "MISSED"
		}
		if r.failed != 0 {
			b.Errorf("%s/%s: %d client requests failed besides the bad version's own", r.kind, r.strategy, r.failed)
		}
		check := r.out.reason
		if i := strings.Index(check, ": "); i >= 0 {
			check = check[i+2:]
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1fs\t≤ 30s %s\t%.1fs\t%d\t%d\t%.0f rps\t%s\n", kindNames[r.kind], r.strategy, d.Seconds(), verdict,
			r.clientSpan.Seconds(), r.badAnswers, r.failed, r.rps, check)
		b.ReportMetric(d.Seconds(), r.kind+"-"+r.strategy+"-rollback-s")
	}
	tw.Flush()

	for _, good := range goods {
		printGood(b, &out, good)
	}
	fmt.Fprint(os.Stdout, out.String())
}

// printGood adds the false-rollback table of one strategy's good rollouts.
func printGood(b *testing.B, out *strings.Builder, good goodResult) {
	slices.Sort(good.durations)
	median, worst := time.Duration(0), time.Duration(0)
	if n := len(good.durations); n > 0 {
		median, worst = good.durations[n/2], good.durations[n-1]
	}
	verdict := "ok"
	if len(good.rolledBack) > 0 {
		verdict = "MISSED"
	}
	if len(good.other) > 0 {
		b.Errorf("good %s rollouts neither promoted nor rolled back: %q", good.strategy, good.other)
	}
	if good.failed != 0 {
		b.Errorf("%d client requests failed during the good %s rollouts", good.failed, good.strategy)
	}
	fmt.Fprintf(out, "\nFalse rollbacks, %s: %d good rollouts (retrained iris, %d models at once, %.0f rps in all)\n", good.strategy, good.rollouts, good.models, good.rps)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "promoted\trolled back\ttarget\tnot finished\tfailed analyses\tdeploy → promoted (median / max)\trequests\tfailed")
	fmt.Fprintf(tw, "%d\t%d\t0 %s\t%d\t%d\t%.1fs / %.1fs\t%d\t%d\n", good.promoted, len(good.rolledBack), verdict, len(good.other),
		good.failedWindows, median.Seconds(), worst.Seconds(), good.requests, good.failed)
	tw.Flush()
	for _, r := range good.rolledBack {
		fmt.Fprintf(out, "  rolled back: %s\n", r)
	}
	for _, r := range good.other {
		fmt.Fprintf(out, "  not finished: %s\n", r)
	}
	b.ReportMetric(float64(len(good.rolledBack)), good.strategy+"-false-rollbacks")
}

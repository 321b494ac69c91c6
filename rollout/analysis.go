package rollout

import (
	"fmt"
	"strings"
	"time"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/metrics"
)

// Verdict is the outcome of one analysis.
type Verdict string

// Verdicts.
const (
	Pass         Verdict = "pass"
	Fail         Verdict = "fail"
	Inconclusive Verdict = "inconclusive" // too little data: hold, never fail or pass
)

// LatencyNoiseFloor is the p99 difference under which the latency ratio
// check cannot fail: at sub-millisecond latencies a ratio of 1.5 is a
// scheduler hiccup, not a slow model.
const LatencyNoiseFloor = 5 * time.Millisecond

// Check is one measured criterion.
type Check struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Unit  string  `json:"unit,omitempty"`
	OK    bool    `json:"ok"`
	// Note explains a check that was not judged (no baseline data).
	Note string `json:"note,omitempty"`
}

// Result is one analysis of a candidate against the stable version.
type Result struct {
	Verdict  Verdict       `json:"verdict"`
	Summary  string        `json:"summary"`
	Requests uint64        `json:"requests"`
	Window   time.Duration `json:"window"`
	At       time.Time     `json:"at"`
	Checks   []Check       `json:"checks"`
}

// Analyze judges a candidate on the counts of one window. With fewer than
// minRequests candidate requests (or compared predictions, when agreement
// is required) it is inconclusive whatever the other numbers say.
func Analyze(a *manifest.Analysis, w metrics.Window, now time.Time) Result {
	c, s := w.Candidate, w.Stable
	r := Result{Requests: c.Requests, Window: w.Duration().Round(time.Millisecond), At: now}
	min := uint64(a.MinRequests)
	r.Checks = append(r.Checks, Check{Name: "requests", Value: float64(c.Requests), Limit: float64(min), OK: c.Requests >= min})

	var failed []string
	judge := func(ch Check) {
		r.Checks = append(r.Checks, ch)
		if !ch.OK && ch.Note == "" {
			failed = append(failed, fmt.Sprintf("%s %s > %s", ch.Name, format(ch.Value, ch.Unit), format(ch.Limit, ch.Unit)))
		}
	}
	if c.Requests > 0 {
		rate := 100 * float64(c.Errors) / float64(c.Requests)
		judge(Check{Name: "errorRate", Value: rate, Limit: float64(a.MaxErrorRate), Unit: "%", OK: rate <= float64(a.MaxErrorRate)})
		p99 := c.Quantile(0.99)
		if a.MaxLatencyP99 > 0 {
			judge(Check{Name: "latencyP99", Value: ms(p99), Limit: ms(a.MaxLatencyP99.D()), Unit: "ms", OK: p99 <= a.MaxLatencyP99.D()})
		}
		judge(latencyRatio(a, c, s))
	}
	compared := c.Agree + c.Disagree
	enoughCompared := true
	if compared > 0 || a.MinAgreement > 0 {
		agree := 100.0
		if compared > 0 {
			agree = 100 * float64(c.Agree) / float64(compared)
		}
		ch := Check{Name: "agreement", Value: agree, Limit: float64(a.MinAgreement), Unit: "%", OK: agree >= float64(a.MinAgreement)}
		if a.MinAgreement > 0 && compared < min {
			enoughCompared = false
			ch.OK, ch.Note = false, fmt.Sprintf("%d of %d compared predictions", compared, min)
		}
		r.Checks = append(r.Checks, ch)
		if ch.Note == "" && !ch.OK {
			failed = append(failed, fmt.Sprintf("agreement %.1f%% < %.1f%%", agree, float64(a.MinAgreement)))
		}
	}

	// Enough requests with a failed check is a failure even when too few
	// predictions were compared: a canary that answers only errors has no
	// prediction to compare and must not hold forever.
	switch {
	case c.Requests >= min && len(failed) > 0:
		r.Verdict = Fail
		r.Summary = strings.Join(failed, "; ")
	case c.Requests < min || !enoughCompared:
		r.Verdict = Inconclusive
		r.Summary = fmt.Sprintf("waiting for data: %d/%d requests", c.Requests, min)
		if a.MinAgreement > 0 {
			r.Summary += fmt.Sprintf(", %d/%d compared predictions", compared, min)
		}
	default:
		r.Verdict = Pass
		r.Summary = fmt.Sprintf("%d requests, all checks passed", c.Requests)
	}
	return r
}

// RatioOutliers is how many requests of the smaller side must lie above
// the quantile the latency ratio compares. A p99 of fewer than 100
// requests is their maximum: a single stalled request (a GC pause, a
// descheduled process) decides it, and at a small canary step the
// candidate has a tenth of the stable version's requests. So both sides
// are compared at the same quantile, p99 or lower when the candidate has
// few requests, and only a slowness shared by several requests fails.
const RatioOutliers = 3

// latencyRatio compares the candidate's p99 with the stable version's,
// when the stable version served enough requests to have one.
func latencyRatio(a *manifest.Analysis, c, s metrics.Snapshot) Check {
	ch := Check{Name: "latencyRatio", Limit: a.MaxLatencyRatio, OK: true}
	if s.Requests < uint64(a.MinRequests) {
		ch.Note = fmt.Sprintf("stable served %d requests; ratio not judged", s.Requests)
		return ch
	}
	q := 0.99
	if n := min(c.Requests, s.Requests); n > 0 {
		q = max(0.5, min(q, 1-RatioOutliers/float64(n)))
	}
	candQ, stableQ := c.Quantile(q), s.Quantile(q)
	if stableQ <= 0 {
		ch.Note = "no stable latency"
		return ch
	}
	ch.Value = float64(candQ) / float64(stableQ)
	ch.OK = ch.Value <= a.MaxLatencyRatio || candQ-stableQ < LatencyNoiseFloor
	return ch
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func format(v float64, unit string) string {
	switch unit {
	case "%":
		return fmt.Sprintf("%.2f%%", v)
	case "ms":
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.2f", v)
}

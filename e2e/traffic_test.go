package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// traffic is a paced, bounded load loop: rps requests a second, at most
// `workers` in flight (when every worker is busy, ticks are skipped, not
// queued), each a one-row prediction cycling through the iris data set. It
// records every answer by the version that gave it (X-Merlin-Version), so
// a scenario can tell the failures a bad version caused from any other.
type traffic struct {
	url    string
	rows   [][]float64
	client *http.Client
	cancel context.CancelFunc
	wg     sync.WaitGroup
	next   atomic.Uint64
	start  time.Time
	end    time.Time

	mu sync.Mutex
	c  tally
}

// tally is what a traffic loop counted; tallies subtract, so a scenario can
// look at a window.
type tally struct {
	OK     map[string]int // 200s by version
	Failed map[string]int // everything else, by version ("" when no version answered)
	// First and Last are when the first and the last request a version
	// answered (successfully or not) were sent: the router picks a version
	// as a request arrives, so a request sent after a traffic switch is
	// routed by the new split.
	First, Last map[string]time.Time
	Samples     []string // the first failures, for the log
	Skipped     int      // ticks skipped because every worker was busy
}

func newTally() tally {
	return tally{OK: map[string]int{}, Failed: map[string]int{}, First: map[string]time.Time{}, Last: map[string]time.Time{}}
}

func (c tally) clone() tally {
	d := c
	d.OK, d.Failed, d.First, d.Last = maps.Clone(c.OK), maps.Clone(c.Failed), maps.Clone(c.First), maps.Clone(c.Last)
	d.Samples = slices.Clone(c.Samples)
	return d
}

// sub returns the counts since an earlier tally.
func (c tally) sub(earlier tally) tally {
	d := newTally()
	for v, n := range c.OK {
		if n -= earlier.OK[v]; n > 0 {
			d.OK[v] = n
		}
	}
	for v, n := range c.Failed {
		if n -= earlier.Failed[v]; n > 0 {
			d.Failed[v] = n
		}
	}
	d.Skipped = c.Skipped - earlier.Skipped
	return d
}

// total is the number of requests answered.
func (c tally) total() int {
	n := 0
	for _, k := range c.OK {
		n += k
	}
	for _, k := range c.Failed {
		n += k
	}
	return n
}

// failedExcept counts the failures not given by the listed versions.
func (c tally) failedExcept(versions ...string) int {
	n := 0
	for v, k := range c.Failed {
		if !slices.Contains(versions, v) {
			n += k
		}
	}
	return n
}

// share is the part of the successful answers version v gave.
func (c tally) share(v string) float64 {
	ok := 0
	for _, k := range c.OK {
		ok += k
	}
	if ok == 0 {
		return 0
	}
	return float64(c.OK[v]) / float64(ok)
}

// startTraffic starts a load loop against a model's V1 predict endpoint.
func startTraffic(t testing.TB, m *merlinProc, model string, rps, workers int) *traffic {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{
		url: m.models + "/v1/models/" + model + ":predict", rows: irisInputs(t), cancel: cancel, start: time.Now(), c: newTally(),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}},
	}
	ticks := make(chan struct{})
	tr.wg.Add(1)
	go func() { // the pacer
		defer tr.wg.Done()
		// Catch up on every wake-up: a ticker alone loses ticks when the
		// pacer is scheduled late on a busy machine.
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		due := 0
		for {
			select {
			case <-ctx.Done():
				close(ticks)
				return
			case now := <-tick.C:
				for target := int(now.Sub(tr.start).Seconds() * float64(rps)); due < target; due++ {
					select {
					case ticks <- struct{}{}:
					default:
						tr.mu.Lock()
						tr.c.Skipped++
						tr.mu.Unlock()
					}
				}
			}
		}
	}()
	for range workers {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for range ticks {
				tr.one()
			}
		}()
	}
	t.Cleanup(tr.stop)
	return tr
}

func (tr *traffic) one() {
	row := tr.rows[tr.next.Add(1)%uint64(len(tr.rows))]
	body, _ := json.Marshal(map[string]any{"instances": [][]float64{row}})
	sent := time.Now()
	resp, err := tr.client.Post(tr.url, "application/json", strings.NewReader(string(body)))
	var code int
	var version, msg string
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		code, version, msg = resp.StatusCode, resp.Header.Get("X-Merlin-Version"), string(b)
	} else {
		msg = err.Error()
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if first, ok := tr.c.First[version]; !ok || sent.Before(first) {
		tr.c.First[version] = sent
	}
	if sent.After(tr.c.Last[version]) {
		tr.c.Last[version] = sent
	}
	if code == http.StatusOK {
		tr.c.OK[version]++
		return
	}
	tr.c.Failed[version]++
	if len(tr.c.Samples) < 5 {
		tr.c.Samples = append(tr.c.Samples, fmt.Sprintf("%d from %q: %s", code, version, strings.TrimSpace(msg)))
	}
}

// tally returns what was counted so far.
func (tr *traffic) tally() tally {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.c.clone()
}

// stop ends the loop (idempotent) and waits for requests in flight.
func (tr *traffic) stop() {
	tr.cancel()
	tr.wg.Wait()
	if tr.end.IsZero() {
		tr.end = time.Now()
	}
}

// rate is the achieved request rate.
func (tr *traffic) rate() float64 {
	end := tr.end
	if end.IsZero() {
		end = time.Now()
	}
	return float64(tr.tally().total()) / end.Sub(tr.start).Seconds()
}

// report logs the load's outcome and checks the rate and that no request
// failed except those the listed (purpose-made bad) versions answered.
func (tr *traffic) report(t testing.TB, bad ...string) tally {
	t.Helper()
	tr.stop()
	c := tr.tally()
	badFailed := 0
	for _, v := range bad {
		badFailed += c.Failed[v]
	}
	note := ""
	if len(bad) > 0 {
		note = fmt.Sprintf(" (not counting %d answered in error by the bad version %v)", badFailed, bad)
	}
	t.Logf("load: %d requests at %.0f rps over %s, %d failed client requests%s, answers by version %v",
		c.total(), tr.rate(), tr.end.Sub(tr.start).Round(time.Second), c.failedExcept(bad...), note, c.OK)
	if n := c.failedExcept(bad...); n != 0 {
		t.Errorf("%d client requests failed: %v %q", n, c.Failed, c.Samples)
	}
	if r := tr.rate(); r < 100 {
		t.Errorf("the load ran at %.0f rps, want ≥ 100 (skipped ticks: %d)", r, c.Skipped)
	}
	return c
}

// rolloutView is a model as GET /api/v1/models/{name} shows it.
type rolloutView struct {
	Name, Strategy, Reason, LastError, RolledBack string
	Phase                                         string
	Step, Steps                                   int
	Versions                                      []struct {
		Version, Role, State, Endpoint string
		Weight                         int
	}
	Analysis *struct {
		Verdict, Summary string
		Requests         int
		Checks           []struct {
			Name         string
			Value, Limit float64
			OK           bool
			Note         string
		}
	}
	Events []struct {
		At                    time.Time
		Kind, Version, Reason string
	}
}

// role returns the version with a role (stable, candidate, previous).
func (v rolloutView) role(r string) (version string, weight int) {
	for _, x := range v.Versions {
		if x.Role == r {
			return x.Version, x.Weight
		}
	}
	return "", 0
}

// event returns the last event of a kind for a version ("" for any).
func (v rolloutView) event(kind, version string) (at time.Time, reason string, ok bool) {
	for i := len(v.Events) - 1; i >= 0; i-- {
		if e := v.Events[i]; e.Kind == kind && (version == "" || e.Version == version) {
			return e.At, e.Reason, true
		}
	}
	return time.Time{}, "", false
}

func (v rolloutView) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s step %d/%d", v.Name, v.Phase, v.Step, v.Steps)
	for _, x := range v.Versions {
		fmt.Fprintf(&b, " %s=%s:%d%%(%s)", x.Role, x.Version, x.Weight, x.State)
	}
	if v.Analysis != nil {
		fmt.Fprintf(&b, " analysis %s: %s", v.Analysis.Verdict, v.Analysis.Summary)
	}
	fmt.Fprintf(&b, " reason %q", v.Reason)
	if v.LastError != "" {
		fmt.Fprintf(&b, " error %q", v.LastError)
	}
	return b.String()
}

func (m *merlinProc) rollout(name string) (rolloutView, error) {
	var v rolloutView
	b, err := get(m.api + "/api/v1/models/" + name)
	if err != nil {
		return v, err
	}
	return v, json.Unmarshal(b, &v)
}

// waitRollout polls the API until cond accepts the model's view.
func (m *merlinProc) waitRollout(name, what string, timeout time.Duration, cond func(rolloutView) error) rolloutView {
	m.t.Helper()
	var v rolloutView
	m.eventually(what, timeout, func() error {
		var err error
		if v, err = m.rollout(name); err != nil {
			return err
		}
		if err := cond(v); err != nil {
			return fmt.Errorf("%w (%s)", err, v)
		}
		return nil
	})
	return v
}

// waitCandidate waits for a new version to be the candidate of model and
// returns its id.
func (m *merlinProc) waitCandidate(name string) string {
	m.t.Helper()
	v := m.waitRollout(name, "a candidate", 60*time.Second, func(v rolloutView) error {
		if c, _ := v.role("candidate"); c == "" {
			return fmt.Errorf("no candidate")
		}
		return nil
	})
	c, _ := v.role("candidate")
	return c
}

// waitStable waits for model to serve one version, with no candidate,
// and returns it.
func (m *merlinProc) waitStable(name string) string {
	m.t.Helper()
	v := m.waitRollout(name, name+" to serve", 90*time.Second, func(v rolloutView) error {
		s, w := v.role("stable")
		if c, _ := v.role("candidate"); c != "" || s == "" || w != 100 || v.Versions[0].State != "ready" {
			return fmt.Errorf("not settled")
		}
		return nil
	})
	s, _ := v.role("stable")
	return s
}

// rolloutEvents reads merlin_rollout_events_total for a model from
// /metrics, by kind.
func (m *merlinProc) rolloutEvents(model string) (map[string]float64, error) {
	b, err := get(m.api + "/metrics")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "merlin_rollout_events_total{") || !strings.Contains(line, `model="`+model+`"`) {
			continue
		}
		i := strings.Index(line, `kind="`)
		j := strings.LastIndexByte(line, ' ')
		if i < 0 || j < 0 {
			return nil, fmt.Errorf("unreadable metric line %q", line)
		}
		kind := line[i+len(`kind="`):]
		kind = kind[:strings.IndexByte(kind, '"')]
		var n float64
		if _, err := fmt.Sscan(line[j+1:], &n); err != nil {
			return nil, fmt.Errorf("metric line %q: %w", line, err)
		}
		out[kind] = n
	}
	return out, nil
}

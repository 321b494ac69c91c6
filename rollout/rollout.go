// Package rollout decides how traffic moves from a model's stable version
// to a new one. It is a pure state machine: Step takes the current state,
// what was observed (is the candidate ready, how did it do, did someone
// type a command) and the time, and returns the next state and the events
// to log. It does no I/O and reads no clock, so every transition is
// table-tested in microseconds; the reconciler does the observing and
// applies Plan(state) to the target.
package rollout

import (
	"fmt"
	"time"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/metrics"
)

// Phase is where a rollout stands.
type Phase string

// Phases.
const (
	// Idle: no candidate; the stable version takes all traffic.
	Idle Phase = "Idle"
	// Deploying: the candidate is starting and gets no traffic yet.
	Deploying Phase = "Deploying"
	// Progressing: the candidate is being judged, at a canary step or on
	// mirrored traffic.
	Progressing Phase = "Progressing"
	// AwaitingPromotion: analysis passed and promotion is manual; the
	// candidate stays where it is, still judged, until someone promotes.
	AwaitingPromotion Phase = "AwaitingPromotion"
	// RolledBack: the candidate failed and was removed; it is not tried
	// again until the model changes or someone promotes it.
	RolledBack Phase = "RolledBack"
)

// Command is a person's instruction (`merlin promote`, a PR comment).
type Command string

// Commands.
const (
	Promote  Command = "promote"
	Rollback Command = "rollback"
	Pause    Command = "pause"
	Resume   Command = "resume"
)

// State is a model's rollout state. It is persisted, so a restarted daemon
// resumes at the same step with the same weights.
type State struct {
	Stable    string `json:"stable,omitempty"`
	Candidate string `json:"candidate,omitempty"`
	// Previous is the version blueGreen replaced, kept warm (no traffic)
	// so that a rollback is instant, until the next rollout.
	Previous string `json:"previous,omitempty"`
	Phase    Phase  `json:"phase"`
	// Step is the canary step index (into steps) the candidate is at.
	Step int `json:"step"`
	// Weight is the candidate's share of client traffic, in percent.
	Weight int `json:"weight"`
	// Since is when the current step or phase began: the analysis window.
	Since time.Time `json:"since"`
	// Started is when the candidate appeared (for the progress deadline).
	Started  time.Time `json:"started"`
	Failures int       `json:"failures"`
	Paused   bool      `json:"paused,omitempty"`
	// RolledBack is the last version rolled back.
	RolledBack string  `json:"rolledBack,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	Analysis   *Result `json:"analysis,omitempty"`
}

// Observations are what the reconciler saw since the last step.
type Observations struct {
	// Desired is the version built from the branch head ("" when the model
	// could not be built: nothing changes).
	Desired string
	// CandidateReady reports that the candidate answers requests.
	CandidateReady bool
	// CandidateFailure says why the candidate cannot run, if it cannot.
	CandidateFailure string
	// StableFailed reports that the stable version cannot serve (it
	// crashes or cannot start): there is nothing healthy to protect or to
	// compare with, so a new version replaces it at once.
	StableFailed bool
	// Metrics is the candidate against the stable version since
	// State.Since, or nil when unavailable.
	Metrics *metrics.Window
	// Command is a person's instruction, if one arrived.
	Command Command
}

// TimedEvent is an event with the time it happened, as recorded in a
// model's history.
type TimedEvent struct {
	At time.Time `json:"at"`
	Event
}

// Event describes a transition, for logs, metrics and PR comments.
type Event struct {
	Kind    string `json:"kind"` // deploy, step, promote, rollback, cancel, hold, pause, resume, analysis, ignored
	Version string `json:"version,omitempty"`
	Reason  string `json:"reason"`
}

// Step advances a rollout.
func Step(spec manifest.Rollout, s State, o Observations, now time.Time) (State, []Event) {
	m := machine{spec: spec, s: s, now: now}
	m.step(o)
	return m.s, m.events
}

type machine struct {
	spec   manifest.Rollout
	s      State
	now    time.Time
	events []Event
}

func (m *machine) emit(kind, version, format string, args ...any) {
	reason := fmt.Sprintf(format, args...)
	m.events = append(m.events, Event{Kind: kind, Version: version, Reason: reason})
	if kind != "analysis" && kind != "ignored" && kind != "cancel" {
		m.s.Reason = reason
	}
}

func (m *machine) step(o Observations) {
	s := &m.s
	switch {
	case o.Desired == "":
		m.command(o) // no buildable version at the head; commands still act
		return
	case s.Stable == "":
		s.Stable, s.Phase = o.Desired, Idle
		m.emit("deploy", o.Desired, "first version of the model")
		return
	case o.Desired == s.Stable:
		if s.Candidate != "" {
			m.emit("cancel", s.Candidate, "cancelled: the branch head is the stable version again")
			m.clearCandidate(Idle)
		}
		if s.Phase == RolledBack {
			s.Phase = Idle
		}
		m.command(o)
		return
	case o.Desired == s.RolledBack:
		if s.Candidate != "" {
			m.emit("cancel", s.Candidate, "superseded by %s, which was rolled back before", o.Desired)
			m.clearCandidate(RolledBack)
		}
		if o.Command != Promote {
			s.Phase = RolledBack
			s.Reason = fmt.Sprintf("%s was rolled back; commit a new model or promote it to try again", o.Desired)
			m.command(o)
			return
		}
		s.RolledBack = ""
		m.emit("promote", o.Desired, "rollback overridden by command: rolling out again")
		o.Command = ""
		m.newCandidate(o.Desired)
	case o.StableFailed && o.Desired != s.Candidate:
		if s.Candidate != "" {
			m.emit("cancel", s.Candidate, "superseded by %s", o.Desired)
			m.clearCandidate(Idle)
		}
		broken := s.Stable
		s.Stable, s.Previous, s.Phase = o.Desired, "", Idle
		m.emit("promote", o.Desired, "the stable version %s is failing: replacing it at once", broken)
		return
	case o.Desired != s.Candidate:
		if s.Candidate != "" {
			m.emit("cancel", s.Candidate, "superseded by %s", o.Desired)
		}
		m.newCandidate(o.Desired)
	}
	m.progress(o)
}

func (m *machine) newCandidate(v string) {
	s := &m.s
	s.Candidate, s.Phase, s.Step, s.Weight = v, Deploying, 0, 0
	s.Since, s.Started, s.Failures, s.Analysis = m.now, m.now, 0, nil
	s.Previous = "" // a new rollout ends blueGreen's warm standby
	m.emit("deploy", v, "new version: deploying with no traffic")
}

// command applies instructions that need no candidate.
func (m *machine) command(o Observations) {
	s := &m.s
	switch o.Command {
	case "":
	case Rollback:
		if s.Previous != "" {
			bad := s.Stable
			s.Stable, s.Previous, s.RolledBack, s.Phase = s.Previous, "", bad, RolledBack
			m.emit("rollback", bad, "rolled back by command to %s", s.Stable)
			return
		}
		m.emit("ignored", "", "nothing to roll back: no rollout in progress")
	case Pause, Resume:
		s.Paused = o.Command == Pause
		m.emit(string(o.Command), "", "rollouts %sd by command", o.Command)
	default:
		m.emit("ignored", "", "nothing to %s: no rollout in progress", o.Command)
	}
}

// progress moves a candidate along.
func (m *machine) progress(o Observations) {
	s := &m.s
	switch o.Command {
	case Rollback:
		m.rollback("rolled back by command")
		return
	case Promote:
		if o.CandidateReady {
			m.promote("promoted by command")
			return
		}
		m.emit("ignored", s.Candidate, "cannot promote %s: it is not ready", s.Candidate)
	case Pause, Resume:
		s.Paused = o.Command == Pause
		if !s.Paused {
			s.Since = m.now // judge a fresh window after a pause
		}
		m.emit(string(o.Command), s.Candidate, "rollout %sd by command", o.Command)
	}
	if o.CandidateFailure != "" {
		m.rollback("candidate cannot run: " + o.CandidateFailure)
		return
	}
	if s.Phase == Deploying {
		m.deploying(o)
		return
	}
	if s.Paused {
		return
	}
	if s.Phase == Progressing || s.Phase == AwaitingPromotion {
		m.analyze(o)
	}
}

func (m *machine) deploying(o Observations) {
	s := &m.s
	if !o.CandidateReady {
		if d := m.spec.ProgressDeadline.D(); d > 0 && m.now.Sub(s.Started) >= d {
			m.rollback(fmt.Sprintf("not ready within the progress deadline (%s)", d))
		}
		return
	}
	if s.Paused {
		return
	}
	switch m.spec.Strategy {
	case manifest.StrategyDirect:
		m.promote("ready")
	case manifest.StrategyCanary:
		if len(m.spec.Steps) <= 1 {
			m.gate("ready; no intermediate canary step")
			return
		}
		s.Phase, s.Step, s.Weight, s.Since = Progressing, 0, m.spec.Steps[0], m.now
		m.emit("step", s.Candidate, "ready: canary step 1/%d at %d%%", len(m.spec.Steps), s.Weight)
	default: // shadow, blueGreen
		s.Phase, s.Weight, s.Since = Progressing, 0, m.now
		m.emit("step", s.Candidate, "ready: verifying on %d%% mirrored traffic", m.spec.MirrorPercent)
	}
}

// WindowSlackPercent is how much shorter than the interval a measured
// window may be and still count: metrics start counting when a step's
// weights take effect, a moment after the step began.
const WindowSlackPercent = 10

func (m *machine) analyze(o Observations) {
	s := &m.s
	if m.now.Sub(s.Since) < m.spec.Interval.D() {
		return
	}
	var r Result
	if o.Metrics == nil {
		r = Result{Verdict: Inconclusive, Summary: "no metrics available", At: m.now}
	} else {
		r = Analyze(m.spec.Analysis, *o.Metrics, m.now)
		if o.Metrics.Duration() < m.spec.Interval.D()*(100-WindowSlackPercent)/100 && r.Verdict != Fail {
			r.Verdict, r.Summary = Inconclusive, fmt.Sprintf("window measured for %s of %s", o.Metrics.Duration().Round(time.Second), m.spec.Interval.D())
		}
	}
	s.Analysis = &r
	m.emit("analysis", s.Candidate, "%s: %s", r.Verdict, r.Summary)
	switch r.Verdict {
	case Inconclusive:
		s.Reason = "holding: " + r.Summary
	case Fail:
		s.Failures++
		if s.Failures >= m.spec.Analysis.FailureLimit {
			m.rollback(fmt.Sprintf("analysis failed %d times in a row: %s", s.Failures, r.Summary))
			return
		}
		s.Since = m.now
		s.Reason = fmt.Sprintf("analysis failed (%d/%d): %s", s.Failures, m.spec.Analysis.FailureLimit, r.Summary)
	case Pass:
		s.Failures = 0
		if s.Phase == AwaitingPromotion {
			s.Since = m.now
			return
		}
		m.advance()
	}
}

// advance moves a passing candidate to the next canary step, or to
// promotion.
func (m *machine) advance() {
	s := &m.s
	next := s.Step + 1
	if m.spec.Strategy == manifest.StrategyCanary && next < len(m.spec.Steps)-1 {
		s.Step, s.Weight, s.Since = next, m.spec.Steps[next], m.now
		m.emit("step", s.Candidate, "analysis passed: canary step %d/%d at %d%%", next+1, len(m.spec.Steps), s.Weight)
		return
	}
	m.gate("analysis passed")
}

// gate promotes, or waits for a person when promotion is manual.
func (m *machine) gate(why string) {
	s := &m.s
	if m.spec.Promotion == manifest.PromotionManual {
		s.Phase, s.Since = AwaitingPromotion, m.now
		m.emit("hold", s.Candidate, "%s: waiting for promotion (merlin promote)", why)
		return
	}
	m.promote(why)
}

func (m *machine) promote(why string) {
	s := &m.s
	v := s.Candidate
	if m.spec.Strategy == manifest.StrategyBlueGreen {
		s.Previous = s.Stable
	}
	s.Stable = v
	if s.RolledBack == v {
		s.RolledBack = ""
	}
	m.clearCandidate(Idle)
	m.emit("promote", v, "%s: promoted", why)
}

func (m *machine) rollback(why string) {
	s := &m.s
	v := s.Candidate
	s.RolledBack = v
	m.clearCandidate(RolledBack)
	m.emit("rollback", v, "%s", why)
}

func (m *machine) clearCandidate(p Phase) {
	s := &m.s
	s.Candidate, s.Phase, s.Step, s.Weight, s.Failures = "", p, 0, 0, 0
	s.Since = m.now
}

// Plan is what the target should run for a model in a given state.
type Plan struct {
	Versions []string       // every version that must run
	Traffic  map[string]int // client traffic shares (percent)
	// Mirror sends MirrorPercent of requests to Mirrored (shadow, blueGreen).
	Mirrored      string
	MirrorPercent int
	// Compared is a canary whose requests are also sent to the stable
	// version, to compare predictions.
	Compared string
}

// PlanFor returns what to run in state s.
func PlanFor(spec manifest.Rollout, s State) Plan {
	p := Plan{Traffic: map[string]int{}}
	if s.Stable == "" {
		return p
	}
	p.Versions = append(p.Versions, s.Stable)
	p.Traffic[s.Stable] = 100
	if s.Previous != "" && s.Previous != s.Stable {
		p.Versions = append(p.Versions, s.Previous)
		p.Traffic[s.Previous] = 0
	}
	if s.Candidate == "" {
		return p
	}
	p.Versions = append(p.Versions, s.Candidate)
	p.Traffic[s.Candidate] = s.Weight
	p.Traffic[s.Stable] = 100 - s.Weight
	active := s.Phase == Progressing || s.Phase == AwaitingPromotion
	switch {
	case active && spec.Strategy.Mirrored():
		p.Mirrored, p.MirrorPercent = s.Candidate, spec.MirrorPercent
	case active && s.Weight > 0:
		p.Compared = s.Candidate
	}
	return p
}

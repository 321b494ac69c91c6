package pullrequest

import (
	"fmt"
	"strings"
	"unicode"
)

// MaxDescription is the longest commit status description GitHub keeps.
const MaxDescription = 140

// CommitState is a commit status state.
type CommitState string

// Commit status states.
const (
	Pending CommitState = "pending"
	Success CommitState = "success"
	Failure CommitState = "failure" // the pull request's model is at fault
	Error   CommitState = "error"   // Merlin or the infrastructure failed
)

// CommitStatus is one `merlin/<model>` status on a commit.
type CommitStatus struct {
	SHA         string
	Context     string
	State       CommitState
	Description string
	TargetURL   string
}

// StatusContext names a model's commit status.
func StatusContext(model string) string { return "merlin/" + model }

// StatusOf decides the commit status of a pull request's version of a
// model. Descriptions are plain text (GitHub shows them unrendered) of at
// most MaxDescription characters, cut on a rune boundary.
func StatusOf(p PR, r Report) CommitStatus {
	st := CommitStatus{SHA: p.HeadSHA, Context: StatusContext(r.Status.Name)}
	if safeURL(p.StatusURL) {
		st.TargetURL = p.StatusURL
	}
	stage := StageOf(p, r)
	var desc string
	switch stage {
	case StageAwaitingApproval:
		st.State, desc = Pending, "fork: waiting for a writer's /merlin preview"
	case StageBuilding, StageStarting:
		st.State, desc = Pending, string(stage)+" "+r.Version
	case StagePreviewing:
		st.State, desc = Success, previewSummary(r)
	case StageBroken:
		st.State, desc = Failure, cmpNonEmpty(r.Error, "the version cannot run")
	case StageError:
		st.State, desc = Error, r.Error
	case StageRollingOut:
		st.State, desc = Pending, rolloutSummary(r)
	case StageAwaitingPromote:
		st.State, desc = Pending, "analysis passed: awaiting /merlin promote"
	case StageServing:
		st.State, desc = Success, "rolled out: "+r.Version+" serves production"
	case StageSuperseded:
		st.State, desc = Success, "rolled out, then superseded by "+r.Status.Desired
	case StageRolledBack:
		st.State, desc = Failure, "rolled back: "+cmpNonEmpty(r.Status.Reason, r.Version)
	case StageClosed:
		st.State, desc = Success, "closed: preview removed"
	case StageNotPreviewed:
		st.State, desc = Success, r.Note
	}
	st.Description = truncateRunes(strings.Join(strings.Fields(desc), " "), MaxDescription)
	return st
}

func previewSummary(r Report) string {
	pv, pd := r.Preview, r.Production
	s := "previewing"
	if pv.Compared > 0 {
		s += fmt.Sprintf(": agreement %s of %s", percent(pv.Agreement), count(pv.Compared))
	}
	if pv.Requests > 0 {
		s += fmt.Sprintf(", p99 %s", ms(pv.P99))
		if pd.Requests > 0 {
			s += fmt.Sprintf(" (prod %s)", ms(pd.P99))
		}
		s += fmt.Sprintf(", errors %.2f%%", 100*pv.ErrorRate())
	}
	return s
}

func rolloutSummary(r Report) string {
	s := r.Status
	if s.Steps > 0 && s.Step > 0 {
		return fmt.Sprintf("rolling out %s: step %d/%d", r.Version, s.Step, s.Steps)
	}
	return fmt.Sprintf("rolling out %s: %s", r.Version, s.Phase)
}

func cmpNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// StatusesToSend returns the statuses of next that differ from the last
// sent for their context and commit, in next's order: a status is written
// only when it changed, which keeps the loop within its API budget. A
// description whose only change is in its figures (a preview's agreement,
// a rollout's step) is not a change: GitHub keeps at most 1,000 statuses
// per commit and context, and the sticky comment carries the live figures.
func StatusesToSend(sent map[string]CommitStatus, next []CommitStatus) []CommitStatus {
	var out []CommitStatus
	for _, st := range next {
		if last, ok := sent[st.Context]; ok && sameStatus(last, st) {
			continue
		}
		out = append(out, st)
	}
	return out
}

// sameStatus reports whether b says what a said, figures aside.
func sameStatus(a, b CommitStatus) bool {
	a.Description, b.Description = withoutFigures(a.Description), withoutFigures(b.Description)
	return a == b
}

// withoutFigures replaces each number (digits with their separators) by #.
func withoutFigures(s string) string {
	var b strings.Builder
	inNumber := false
	for _, r := range s {
		switch {
		case unicode.IsDigit(r):
			if !inNumber {
				b.WriteByte('#')
			}
			inNumber = true
		case inNumber && (r == '.' || r == ','):
		default:
			inNumber = false
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Sent records statuses as sent, returning the new map (sent is not
// modified).
func Sent(sent map[string]CommitStatus, done []CommitStatus) map[string]CommitStatus {
	out := make(map[string]CommitStatus, len(sent)+len(done))
	for k, v := range sent {
		out[k] = v
	}
	for _, st := range done {
		out[st.Context] = st
	}
	return out
}

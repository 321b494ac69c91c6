package pullrequest

import (
	"fmt"
	"strings"
	"time"

	"merlin.dev/merlin/serving"
)

// MaxCommentLen is the most a sticky comment may hold, in bytes (GitHub
// rejects bodies over 65,536 characters; bytes are never fewer).
const MaxCommentLen = 60000

// Lengths kept of what users and models write, so one model's section
// stays a few kilobytes whatever it is fed.
const (
	maxNameRunes  = 100
	maxErrorRunes = 1000
)

// Comment is everything the sticky comment of a pull request shows.
type Comment struct {
	PR     PR
	Models []Report
}

// Render writes the sticky comment: the marker, a header, one table per
// model (the order given), and a note in place of the models that do not
// fit within limit bytes (MaxCommentLen when 0). It is cut only between
// whole blocks, never inside the marker or a code fence.
func Render(c Comment, limit int) string {
	if limit <= 0 {
		limit = MaxCommentLen
	}
	head := Marker(c.PR.Number) + "\n" + header(c)
	sections := make([]string, len(c.Models))
	for i, r := range c.Models {
		sections[i] = section(c.PR, r)
	}
	return assemble(head, sections, footer(c.PR), limit, func(omitted int) string {
		return fmt.Sprintf("\n> [!NOTE]\n> %d of %d models are not shown: this comment would pass GitHub's size limit. %s\n",
			omitted, len(sections), seeStatus(c.PR.StatusURL))
	})
}

// assemble joins head, as many sections as fit and tail within limit
// bytes, adding note(omitted) when some did not fit.
func assemble(head string, sections []string, tail string, limit int, note func(omitted int) string) string {
	var b strings.Builder
	b.WriteString(head)
	for i, s := range sections {
		// Room is kept for the note of the sections after this one.
		reserve := len(tail)
		if i < len(sections)-1 {
			reserve += len(note(len(sections) - i - 1))
		}
		if b.Len()+len(s)+reserve > limit {
			n := note(len(sections) - i)
			if b.Len()+len(n)+len(tail) <= limit {
				b.WriteString(n)
			}
			break
		}
		b.WriteString(s)
	}
	if b.Len()+len(tail) <= limit {
		b.WriteString(tail)
	}
	return b.String()
}

func header(c Comment) string {
	p := c.PR
	var b strings.Builder
	fmt.Fprintf(&b, "### Merlin · pull request #%d · %s\n\n", p.Number, shortSHA(p.HeadSHA))
	switch {
	case p.Closed && !p.Merged:
		b.WriteString("Closed without merging: its previews were removed.\n")
	case p.Merged && rolloutOver(c):
		b.WriteString("Merged: the production rollout is over.\n")
	case p.Merged:
		b.WriteString("Merged: this comment follows the production rollout to its end.\n")
	case p.ForkWaiting() && p.ApprovedSHA != "":
		fmt.Fprintf(&b, "This pull request comes from a fork and changed since a writer approved %s: nothing of the new head runs until a writer comments `/merlin preview` again.\n",
			shortSHA(p.ApprovedSHA))
	case p.ForkWaiting():
		b.WriteString("This pull request comes from a fork, so its models are not deployed on their own (a model file can run code). A writer can comment `/merlin preview` to deploy the current head as a shadow of production.\n")
	case len(c.Models) == 0:
		b.WriteString("No model differs from production.\n")
	default:
		b.WriteString("Each changed model runs as a shadow of production: it gets a copy of production's requests, never answers clients, and its predictions are compared with production's.\n")
	}
	return b.String()
}

// rolloutOver reports whether every model of a merged pull request
// reached the end of its rollout, one way or the other.
func rolloutOver(c Comment) bool {
	for _, r := range c.Models {
		switch StageOf(c.PR, r) {
		case StageServing, StageSuperseded, StageRolledBack:
		default:
			return false
		}
	}
	return true
}

func footer(p PR) string {
	return "\n<sub>" + strings.TrimSpace(seeStatus(p.StatusURL)+" Commands: `/merlin help`.") + "</sub>\n"
}

func seeStatus(url string) string {
	if !safeURL(url) {
		return ""
	}
	return "Details on the [status page](" + url + ")."
}

// safeURL accepts the configured status page URL only when it cannot
// break out of a Markdown link.
func safeURL(u string) bool {
	return (strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://")) &&
		!strings.ContainsAny(u, " \t\r\n()<>[]`\"'|\\")
}

// shortSHA shows a commit as code when it is hex, escaped text otherwise.
func shortSHA(sha string) string {
	if sha == "" || strings.Trim(strings.ToLower(sha), "0123456789abcdef") != "" {
		return Text(sha, 12)
	}
	return "`" + sha[:min(len(sha), 7)] + "`"
}

// section renders one model: a heading, its table and its trend.
func section(p PR, r Report) string {
	stage := StageOf(p, r)
	var b strings.Builder
	fmt.Fprintf(&b, "\n#### %s %s\n\n", stageIcon(stage), Text(r.Status.Name, maxNameRunes))
	b.WriteString("| | this pull request | production |\n|---|---|---|\n")
	row := func(k, a, z string) { fmt.Fprintf(&b, "| %s | %s | %s |\n", k, a, z) }
	row("version", code(r.Version), code(r.Status.Stable()))
	row("state", stateText(p, r, stage), productionState(r.Status))
	ranNothing := (stage == StageBroken || stage == StageError) && r.Preview.Requests == 0
	if stage != StageAwaitingApproval && stage != StageClosed && stage != StageBuilding && stage != StageNotPreviewed && !ranNothing {
		pv, pd := r.Preview, r.Production
		requests := "requests"
		if !p.Merged {
			requests = "shadow requests"
		}
		row(requests, count(pv.Requests), count(pd.Requests))
		agreement := "—"
		if pv.Compared > 0 {
			agreement = fmt.Sprintf("%s of %s compared", percent(pv.Agreement), count(pv.Compared))
		}
		row("agreement", agreement, "(reference)")
		row("latency p50 / p99", latency(pv, pd), latency(pd, Measure{}))
		row("error rate", rate(pv), rate(pd))
		if h := lastSamples(r.History); len(h) > 1 {
			row("trend", trend(h), "")
		}
	}
	if r.Error != "" {
		row("last error", Text(r.Error, maxErrorRunes), "")
	} else if r.Status.LastError != "" {
		row("last error", "", Text(r.Status.LastError, maxErrorRunes))
	}
	if chart := agreementChart(r.History); chart != "" && stage != StageClosed {
		b.WriteString("\n<details><summary>agreement over time</summary>\n\n" + chart + "\n</details>\n")
	}
	return b.String()
}

func stageIcon(s Stage) string {
	switch s {
	case StagePreviewing, StageServing, StageSuperseded:
		return "🟢"
	case StageBroken, StageRolledBack:
		return "🔴"
	case StageError:
		return "⚠️"
	case StageClosed:
		return "⚪"
	}
	return "🟡"
}

// stateText says where the pull request's version stands, with the
// rollout step or the preview's mirror share.
func stateText(p PR, r Report, stage Stage) string {
	s := r.Status
	switch stage {
	case StagePreviewing, StageStarting:
		for _, m := range s.Mirrors {
			if m.Version == r.Version {
				return fmt.Sprintf("%s (shadow, %d%% of requests mirrored)", stage, m.Percent)
			}
		}
	case StageRollingOut:
		if s.Steps > 0 && s.Step > 0 {
			w := 0
			if v, ok := s.Version(r.Version); ok {
				w = v.Weight
			}
			return fmt.Sprintf("%s: %s step %d/%d, %d%% of traffic", stage, Text(s.Strategy, 20), s.Step, s.Steps, w)
		}
		return fmt.Sprintf("%s: %s %s", stage, Text(s.Strategy, 20), Text(string(s.Phase), 30))
	case StageAwaitingPromote:
		return string(stage) + ": comment `/merlin promote` to finish"
	case StageRolledBack:
		if s.Reason != "" {
			return string(stage) + ": " + Text(s.Reason, maxErrorRunes)
		}
	case StageNotPreviewed:
		return string(stage) + ": " + Text(r.Note, maxErrorRunes)
	}
	return string(stage)
}

func productionState(s serving.ModelStatus) string {
	var parts []string
	if s.Paused {
		parts = append(parts, "paused")
	}
	if s.Held {
		parts = append(parts, "held at its last good version")
	}
	if len(parts) == 0 {
		return "serving"
	}
	return strings.Join(parts, ", ")
}

func code(v string) string {
	if v == "" {
		return "—"
	}
	return Text(v, maxNameRunes+9)
}

func count(n uint64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func percent(f float64) string { return fmt.Sprintf("%.1f%%", 100*clamp01(f)) }

func rate(m Measure) string {
	if m.Requests == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f%%", 100*m.ErrorRate())
}

// latency shows m's p50 / p99, and the p99's ratio to base's when known.
func latency(m, base Measure) string {
	if m.Requests == 0 {
		return "—"
	}
	s := ms(m.P50) + " / " + ms(m.P99)
	if base.Requests > 0 && base.P99 > 0 {
		s += fmt.Sprintf(" (p99 ×%.2f)", float64(m.P99)/float64(base.P99))
	}
	return s
}

func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	switch {
	case f >= 10000:
		return fmt.Sprintf("%.1f s", f/1000)
	case f >= 10:
		return fmt.Sprintf("%.0f ms", f)
	case f >= 1:
		return fmt.Sprintf("%.1f ms", f)
	}
	return fmt.Sprintf("%.2f ms", f)
}

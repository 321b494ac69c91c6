package pullrequest

import (
	"time"

	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
)

// PR is what the loop knows of a pull request.
type PR struct {
	Number  int
	HeadSHA string
	// Fork: the head repository is not the base repository. A fork's
	// models run only after a writer's `/merlin preview`.
	Fork bool
	// ApprovedSHA is the head SHA a writer's `/merlin preview` pinned
	// (forks only); a later push needs another approval.
	ApprovedSHA string
	Merged      bool
	Closed      bool
	// StatusURL is the status page, linked from the comment and the
	// commit statuses.
	StatusURL string
}

// ForkWaiting reports whether the pull request is a fork whose head has
// no writer's approval, so nothing of it may run.
func (p PR) ForkWaiting() bool {
	return p.Fork && !p.Merged && (p.ApprovedSHA == "" || p.ApprovedSHA != p.HeadSHA)
}

// Report is one model changed by a pull request: production's status (as
// GET /api/v1/models shows it) and what was measured of the pull
// request's version against production's stable version.
type Report struct {
	Status serving.ModelStatus
	// Version is the pull request's version of the model (its preview;
	// after the merge, the version being rolled out).
	Version string
	// Error is the pull request's own problem with the model (a broken
	// merlin.yaml as path:line:col, a failed build), with its reason.
	Error       string
	ErrorReason serving.Reason
	// Note says why a changed model is not previewed (a model production
	// does not serve yet deploys when merged; production's merlin.yaml
	// turned its previews off).
	Note string
	// Preview and Production are measured over the same window.
	Preview, Production Measure
	// History holds recent samples of the preview, oldest first.
	History []Sample
}

// Measure is what one version did over a window.
type Measure struct {
	Requests uint64
	Errors   uint64
	// Compared counts predictions compared with production's; Agreement
	// is the share that agreed (0–1).
	Compared  uint64
	Agreement float64
	P50, P99  time.Duration
}

// ErrorRate is the share of requests that failed, 0–1.
func (m Measure) ErrorRate() float64 {
	if m.Requests == 0 {
		return 0
	}
	return float64(m.Errors) / float64(m.Requests)
}

// Sample is one point of a preview's trend.
type Sample struct {
	At        time.Time
	Agreement float64 // 0–1
	P99       time.Duration
}

// Stage is where a pull request's version of a model stands: the one
// summary both the comment and the commit status are derived from.
type Stage string

// Stages.
const (
	StageAwaitingApproval Stage = "awaiting /merlin preview" // a fork without a writer's approval
	StageBuilding         Stage = "building"
	StageStarting         Stage = "starting"
	StagePreviewing       Stage = "previewing"  // shadowing production, compared
	StageBroken           Stage = "failed"      // the pull request's model cannot run (its fault)
	StageError            Stage = "error"       // Merlin or the infrastructure failed
	StageRollingOut       Stage = "rolling out" // merged: a rollout of the version is in progress
	StageAwaitingPromote  Stage = "awaiting promotion"
	StageServing          Stage = "serving" // merged and rolled out: production serves it
	StageRolledBack       Stage = "rolled back"
	StageSuperseded       Stage = "superseded"    // merged, but a later version took its place
	StageClosed           Stage = "closed"        // closed unmerged: previews removed
	StageNotPreviewed     Stage = "not previewed" // changed, but not shown beside production (Report.Note says why)
)

// faultOfPR lists the reasons that blame the pull request's content, not
// Merlin: a commit status says failure for them, error for the rest.
var faultOfPR = map[serving.Reason]bool{
	serving.ReasonManifest: true, serving.ReasonBuild: true, serving.ReasonVersionFailed: true,
	serving.ReasonCrashLoop: true, serving.ReasonCannotRun: true, serving.ReasonRollout: true,
}

// StageOf decides where the pull request's version of a model stands.
func StageOf(p PR, r Report) Stage {
	switch {
	case p.Closed && !p.Merged:
		return StageClosed
	case p.ForkWaiting():
		return StageAwaitingApproval
	case r.Error != "" && faultOfPR[r.ErrorReason]:
		return StageBroken
	case r.Error != "":
		return StageError
	case p.Merged:
		return mergedStage(r)
	case r.Note != "":
		return StageNotPreviewed
	}
	v, ok := previewOf(p.Number, r)
	switch {
	case !ok || v.State == serving.StatePending:
		return StageBuilding
	case v.Failed():
		return StageBroken
	case v.State == serving.StateStarting || !v.Ready():
		return StageStarting
	}
	return StagePreviewing
}

func mergedStage(r Report) Stage {
	s := r.Status
	switch {
	case r.Version == "":
		return StageBuilding
	case s.RolledBack == r.Version:
		return StageRolledBack
	case s.Phase == rollout.AwaitingPromotion && s.Desired == r.Version:
		return StageAwaitingPromote
	case (s.Phase == rollout.Deploying || s.Phase == rollout.Progressing) && s.Desired == r.Version:
		return StageRollingOut
	}
	if v, ok := s.Version(r.Version); ok && v.Role == serving.RoleStable && v.Weight == 100 {
		return StageServing
	}
	if s.Desired != r.Version {
		// Production has moved past the version (a later merge): the
		// pull request's rollout is over as far as its comment goes.
		return StageSuperseded
	}
	return StageBuilding
}

// previewOf finds pull request pr's preview among the model's versions.
func previewOf(pr int, r Report) (serving.VersionStatus, bool) {
	for _, v := range r.Status.Versions {
		if v.Role == serving.RolePreview && v.PR == pr && (r.Version == "" || v.Version == r.Version) {
			return v, true
		}
	}
	return serving.VersionStatus{}, false
}

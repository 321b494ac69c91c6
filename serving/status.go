package serving

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"merlin.dev/merlin/rollout"
)

// ModelStatus is the one status shape of a model, shared by the targets,
// the reconciler and the API (GET /api/v1/models). A target fills what it
// observes (Name, Versions, Mirrors, Conditions); the reconciler adds the
// source, the rollout and its own conditions, and the API serves it as is.
type ModelStatus struct {
	Name string `json:"name"`
	Repo string `json:"repo,omitempty"`
	// File is the manifest that declares the model; Commit the revision
	// the desired version was built from.
	File     string `json:"file,omitempty"`
	Commit   string `json:"commit,omitempty"`
	Strategy string `json:"strategy,omitempty"`
	// Desired is the version built from the branch head.
	Desired string        `json:"desired,omitempty"`
	Phase   rollout.Phase `json:"phase,omitempty"`
	// Step is the canary step (1-based) and of how many; 0 outside a canary.
	Step     int             `json:"step"`
	Steps    int             `json:"steps,omitempty"`
	Versions []VersionStatus `json:"versions"`
	// Mirror is the first of Mirrors (kept for API clients of v1).
	Mirror   *Mirror         `json:"mirror,omitempty"`
	Mirrors  []Mirror        `json:"mirrors,omitempty"`
	Analysis *rollout.Result `json:"analysis,omitempty"`
	// Reason is why the rollout is where it is.
	Reason    string `json:"reason,omitempty"`
	LastError string `json:"lastError,omitempty"`
	// Held is set while the model's manifest is broken: it keeps serving
	// its last good version.
	Held   bool `json:"held,omitempty"`
	Paused bool `json:"paused,omitempty"`
	// RolledBack is a version that failed and will not be retried.
	RolledBack string               `json:"rolledBack,omitempty"`
	Events     []rollout.TimedEvent `json:"events,omitempty"`
	Conditions []Condition          `json:"conditions,omitempty"`
}

// Version returns the status of version id, if listed.
func (m ModelStatus) Version(id string) (VersionStatus, bool) {
	i := slices.IndexFunc(m.Versions, func(v VersionStatus) bool { return v.Version == id })
	if i < 0 {
		return VersionStatus{}, false
	}
	return m.Versions[i], true
}

// Stable returns the id of the stable version, or "" when none is listed.
func (m ModelStatus) Stable() string {
	for _, v := range m.Versions {
		if v.Role == RoleStable {
			return v.Version
		}
	}
	return ""
}

// ConditionType names a condition.
type ConditionType string

// Condition types, as on Kubernetes objects (kstatus).
const (
	// Ready: the version answers requests; for a model, its desired split
	// is routed and every version with traffic answers.
	Ready ConditionType = "Ready"
	// Progressing: the target (or the rollout) is moving towards the
	// desired state: starting, restarting, building, waiting for readiness.
	Progressing ConditionType = "Progressing"
	// Degraded: something is wrong: a crash, a broken manifest, a failed
	// build. With Progressing false, it will not fix itself.
	Degraded ConditionType = "Degraded"
)

// ConditionStatus is True, False or Unknown.
type ConditionStatus string

// Condition statuses.
const (
	True    ConditionStatus = "True"
	False   ConditionStatus = "False"
	Unknown ConditionStatus = "Unknown"
)

// Condition is one observed aspect of a version or a model.
type Condition struct {
	Type   ConditionType   `json:"type"`
	Status ConditionStatus `json:"status"`
	// Reason is machine-readable, CamelCase (see the Reason constants).
	Reason  Reason `json:"reason"`
	Message string `json:"message,omitempty"`
	// LastTransitionTime is when Status last changed.
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// Reason says why a condition or an error is what it is.
type Reason string

// Reasons of version conditions.
const (
	ReasonStarting     Reason = "Starting"     // launched, loading the model
	ReasonAvailable    Reason = "Available"    // answering requests
	ReasonScaledToZero Reason = "ScaledToZero" // stopped while idle; starts on demand
	ReasonRestarting   Reason = "Restarting"   // exited; restarting with backoff
	ReasonCrashLoop    Reason = "CrashLoop"    // exited repeatedly before becoming ready
	ReasonCannotRun    Reason = "CannotRun"    // no runtime or package for the model: a restart cannot fix it
	ReasonStopping     Reason = "Stopping"     // draining before it stops
	ReasonHealthy      Reason = "Healthy"      // nothing wrong
	ReasonWaiting      Reason = "Waiting"      // the backend has not reported yet
)

// Reasons of model conditions.
const (
	ReasonRouted           Reason = "Routed"            // the desired split is routed
	ReasonWaitingForReady  Reason = "WaitingForReady"   // a version gaining traffic is not ready yet
	ReasonVersionFailed    Reason = "VersionFailed"     // a listed version cannot run
	ReasonRolloutActive    Reason = "RolloutInProgress" // a candidate is being deployed or judged
	ReasonRolloutCompleted Reason = "RolloutCompleted"
	ReasonBuilding         Reason = "Building"
)

// Reasons of errors: which part of the pipeline failed.
const (
	ReasonManifest Reason = "ManifestError" // merlin.yaml is invalid (the message is path:line:col)
	ReasonSource   Reason = "SourceError"   // the git or MLflow source cannot be read
	ReasonBuild    Reason = "BuildError"    // the version could not be built
	ReasonServing  Reason = "ServingError"  // the target refused or failed the deployment
	ReasonRollout  Reason = "RolloutError"  // the rollout cannot proceed as declared
	ReasonSCM      Reason = "SCMError"      // the code host (GitHub) failed
)

// Error is an error with the reason that classifies it.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an error with a reason.
func Errorf(reason Reason, format string, args ...any) error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// WithReason gives err a reason, unless it has one already (nil stays nil).
func WithReason(reason Reason, err error) error {
	var e *Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	return &Error{Reason: reason, Err: err}
}

// ReasonOf returns the reason an error carries ("" for none).
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// Find returns the condition of type t, if present.
func Find(conds []Condition, t ConditionType) (Condition, bool) {
	for _, c := range conds {
		if c.Type == t {
			return c, true
		}
	}
	return Condition{}, false
}

// IsTrue reports whether condition t is present and True.
func IsTrue(conds []Condition, t ConditionType) bool {
	c, ok := Find(conds, t)
	return ok && c.Status == True
}

// Set returns conds with c in place of any condition of its type. The
// transition time stays when the status did not change, else it is now
// (or c's own, when set).
func Set(conds []Condition, c Condition, now time.Time) []Condition {
	out := slices.Clone(conds)
	if c.LastTransitionTime.IsZero() {
		c.LastTransitionTime = now
	}
	for i, old := range out {
		if old.Type != c.Type {
			continue
		}
		if old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		out[i] = c
		return out
	}
	return append(out, c)
}

// VersionConditions derives a version's three conditions from its state,
// keeping transition times from prev where a status did not change. reason
// may refine the state's default reason: a failed version whose reason is
// ReasonCrashLoop or ReasonCannotRun is no longer Progressing (the target
// gave up on it). message says what happened.
func VersionConditions(prev []Condition, state State, reason Reason, message string, now time.Time) []Condition {
	ready, progressing, degraded := False, False, False
	switch state {
	case StateReady, StateIdle:
		ready = True
	case StateStarting:
		progressing = True
	case StateFailed:
		degraded = True
		if reason != ReasonCrashLoop && reason != ReasonCannotRun {
			progressing = True
		}
	}
	if reason == "" {
		reason = map[State]Reason{StateStarting: ReasonStarting, StateReady: ReasonAvailable, StateIdle: ReasonScaledToZero,
			StateFailed: ReasonRestarting, StateStopping: ReasonStopping}[state]
	}
	healthyOr := func(s ConditionStatus) Reason {
		if s == True {
			return reason
		}
		return ReasonHealthy
	}
	// A condition carries the message while it is in its bad state.
	msgIf := func(bad bool) string {
		if bad {
			return message
		}
		return ""
	}
	conds := Set(prev, Condition{Type: Ready, Status: ready, Reason: reason, Message: msgIf(ready != True)}, now)
	conds = Set(conds, Condition{Type: Progressing, Status: progressing, Reason: healthyOr(progressing), Message: msgIf(progressing == True)}, now)
	return Set(conds, Condition{Type: Degraded, Status: degraded, Reason: healthyOr(degraded), Message: msgIf(degraded == True)}, now)
}

// ModelConditions derives a model's conditions as a target sees them from
// its routing and its versions' statuses, keeping transition times from
// prev where a status did not change.
func ModelConditions(prev []Condition, r Routing, versions []VersionStatus, now time.Time) []Condition {
	var failed []string
	var failMsg string
	for _, v := range versions {
		if IsTrue(v.Conditions, Degraded) && slices.Contains(r.Keep, v.Version) {
			failed = append(failed, v.Version)
			if c, _ := Find(v.Conditions, Degraded); failMsg == "" {
				failMsg = fmt.Sprintf("%s: %s", v.Version, cmp.Or(c.Message, string(c.Reason)))
			}
		}
	}
	allReady := true
	for _, v := range versions {
		if r.Traffic[v.Version] > 0 && !v.Ready() {
			allReady = false
		}
	}
	ready := Condition{Type: Ready, Status: True, Reason: ReasonRouted}
	progressing := Condition{Type: Progressing, Status: False, Reason: ReasonRouted}
	switch {
	case !r.Converged():
		ready = Condition{Type: Ready, Status: False, Reason: ReasonWaitingForReady, Message: "waiting for " + strings.Join(r.Waiting, ", ") + " to become ready; traffic was not moved"}
		progressing = Condition{Type: Progressing, Status: True, Reason: ReasonWaitingForReady, Message: ready.Message}
	case !allReady:
		ready = Condition{Type: Ready, Status: False, Reason: ReasonStarting, Message: "a version with traffic is not ready"}
		progressing = Condition{Type: Progressing, Status: True, Reason: ReasonStarting}
	}
	degraded := Condition{Type: Degraded, Status: False, Reason: ReasonHealthy}
	if len(failed) > 0 {
		degraded = Condition{Type: Degraded, Status: True, Reason: ReasonVersionFailed, Message: failMsg}
	}
	conds := Set(prev, ready, now)
	conds = Set(conds, progressing, now)
	return Set(conds, degraded, now)
}

package reconciler

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
)

// Status is a snapshot of one repository's reconciliation, for the API.
type Status struct {
	Repo string `json:"repo"`
	URL  string `json:"url,omitempty"`
	// SHA is the last reconciled revision.
	SHA   string `json:"sha,omitempty"`
	Error string `json:"error,omitempty"`
	// FileErrors are manifest problems by file (path:line:col lines).
	FileErrors map[string]string `json:"fileErrors,omitempty"`
	// StateError is why the state (rollout steps, paused and rolled-back
	// models) cannot be saved, while it cannot: a full disk, a state
	// directory gone. Reconciliation goes on, but a restart would resume
	// from the last state saved.
	StateError string `json:"stateError,omitempty"`
	// Models are in the one status shape the API serves.
	Models []serving.ModelStatus `json:"models"`
}

// Status returns the latest snapshot.
func (r *Reconciler) Status() Status {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.status
}

// Repo is the repository's name.
func (r *Reconciler) Repo() string { return r.cfg.Repo }

// publish snapshots the state, merged with what the target observed, for
// readers on other goroutines.
func (r *Reconciler) publish() {
	st := Status{Repo: r.cfg.Repo, URL: r.cfg.URL, SHA: r.state.SHA, Error: r.repoError, FileErrors: maps.Clone(r.fileErrors),
		StateError: r.saves.err}
	now := r.now()
	for _, name := range r.sortedModels() {
		ms := r.state.Models[name]
		m := modelStatus(r.cfg.Repo, ms, r.observed[name])
		ms.conds = modelConditions(ms, r.observed[name], now)
		m.Conditions = slices.Clone(ms.conds)
		st.Models = append(st.Models, m)
	}
	r.mu.Lock()
	r.status = st
	r.mu.Unlock()
}

// modelStatus is the API's view of a model: the reconciler's state with
// the target's observations of each version it refers to.
func modelStatus(repo string, ms *modelState, seen serving.ModelStatus) serving.ModelStatus {
	s := ms.State
	plan := rollout.PlanFor(ms.Rollout, s)
	m := serving.ModelStatus{
		Name: ms.Name, Repo: repo, File: ms.File, Commit: ms.SHA, Strategy: string(ms.Rollout.Strategy),
		Desired: ms.Desired, Phase: s.Phase, Analysis: s.Analysis, Reason: s.Reason, LastError: ms.Error,
		Held: ms.Held, Paused: s.Paused, RolledBack: s.RolledBack, Events: slices.Clone(ms.Events),
		Mirrors: slices.Clone(seen.Mirrors), Versions: []serving.VersionStatus{},
	}
	if len(m.Mirrors) > 0 {
		m.Mirror = &m.Mirrors[0]
	}
	if m.Strategy == "canary" && s.Candidate != "" && s.Phase != rollout.Deploying {
		m.Step, m.Steps = s.Step+1, len(ms.Rollout.Steps)
	}
	for _, role := range []struct {
		role serving.Role
		id   string
	}{{serving.RoleStable, s.Stable}, {serving.RoleCandidate, s.Candidate}, {serving.RolePrevious, s.Previous}} {
		if role.id == "" {
			continue
		}
		v, ok := seen.Version(role.id)
		if !ok {
			v = serving.VersionStatus{Version: role.id, Weight: plan.Traffic[role.id], State: serving.StatePending}
		}
		v.Role = role.role
		m.Versions = append(m.Versions, v)
	}
	for _, pr := range slices.Sorted(maps.Keys(ms.Previews)) {
		p := ms.Previews[pr]
		if slices.ContainsFunc(m.Versions, func(v serving.VersionStatus) bool { return v.Version == p.Version.ID }) {
			continue
		}
		v, ok := seen.Version(p.Version.ID)
		if !ok {
			v = serving.VersionStatus{Version: p.Version.ID, State: serving.StatePending}
		}
		v.Role, v.PR, v.Weight = serving.RolePreview, pr, 0
		m.Versions = append(m.Versions, v)
	}
	return m
}

// modelConditions summarises a model: the target's view of what it routes,
// refined by what the reconciler knows (a build in flight, a rollout in
// progress, an error with its reason). Transition times carry over from
// the last summary.
func modelConditions(ms *modelState, seen serving.ModelStatus, now time.Time) []serving.Condition {
	get := func(t serving.ConditionType, def serving.Condition) serving.Condition {
		if c, ok := serving.Find(seen.Conditions, t); ok {
			return c
		}
		return def
	}
	ready := get(serving.Ready, serving.Condition{Type: serving.Ready, Status: serving.False, Reason: serving.ReasonWaiting, Message: "not deployed yet"})
	progressing := get(serving.Progressing, serving.Condition{Type: serving.Progressing, Status: serving.False, Reason: serving.ReasonHealthy})
	degraded := get(serving.Degraded, serving.Condition{Type: serving.Degraded, Status: serving.False, Reason: serving.ReasonHealthy})
	switch p := ms.State.Phase; {
	case ms.BuildPending:
		progressing = serving.Condition{Type: serving.Progressing, Status: serving.True, Reason: serving.ReasonBuilding, Message: "building the model's new files"}
	case p == rollout.Deploying || p == rollout.Progressing || p == rollout.AwaitingPromotion:
		progressing = serving.Condition{Type: serving.Progressing, Status: serving.True, Reason: serving.ReasonRolloutActive,
			Message: cmp.Or(ms.State.Reason, fmt.Sprintf("rolling out %s (%s)", ms.State.Candidate, p))}
	}
	if ms.Error != "" {
		degraded = serving.Condition{Type: serving.Degraded, Status: serving.True, Reason: cmp.Or(ms.Reason, serving.ReasonServing), Message: ms.Error}
	}
	conds := ms.conds
	for _, c := range []serving.Condition{ready, progressing, degraded} {
		if old, ok := serving.Find(conds, c.Type); ok && old.Status != c.Status {
			c.LastTransitionTime = time.Time{} // it changes now, as far as this summary knows
		}
		conds = serving.Set(conds, c, now)
	}
	return conds
}

func (r *Reconciler) setRepoError(msg string) {
	if msg != "" && msg != r.repoError {
		r.log.Error("reconcile failed", "err", msg)
	}
	r.repoError = msg
}

func (r *Reconciler) setFileError(file, msg string) {
	if r.fileErrors == nil {
		r.fileErrors = map[string]string{}
	}
	r.fileErrors[file] = msg
}

package reconciler

import (
	"maps"
	"slices"

	"merlin.dev/merlin/rollout"
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
	Models     []ModelStatus     `json:"models"`
}

// ModelStatus is one model's reconciliation and rollout.
type ModelStatus struct {
	Name     string `json:"name"`
	Repo     string `json:"repo"`
	File     string `json:"file,omitempty"`
	SHA      string `json:"sha,omitempty"`
	Strategy string `json:"strategy,omitempty"`
	Steps    []int  `json:"steps,omitempty"`
	// Desired is the version built from the branch head.
	Desired  string          `json:"desired,omitempty"`
	Rollout  rollout.State   `json:"rollout"`
	Traffic  map[string]int  `json:"traffic"`
	Mirror   string          `json:"mirror,omitempty"`
	Error    string          `json:"error,omitempty"`
	Held     bool            `json:"held,omitempty"`
	Events   []TimedEvent    `json:"events,omitempty"`
	Analysis *rollout.Result `json:"analysis,omitempty"`
}

// Status returns the latest snapshot.
func (r *Reconciler) Status() Status {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.status
}

// Repo is the repository's name.
func (r *Reconciler) Repo() string { return r.cfg.Repo }

// publish snapshots the state for readers on other goroutines.
func (r *Reconciler) publish() {
	st := Status{Repo: r.cfg.Repo, URL: r.cfg.URL, SHA: r.state.SHA, Error: r.repoError, FileErrors: maps.Clone(r.fileErrors)}
	for _, name := range r.sortedModels() {
		ms := r.state.Models[name]
		plan := rollout.PlanFor(ms.Rollout, ms.State)
		m := ModelStatus{
			Name: name, Repo: r.cfg.Repo, File: ms.File, SHA: ms.SHA, Strategy: string(ms.Rollout.Strategy),
			Steps: slices.Clone(ms.Rollout.Steps), Desired: ms.Desired, Rollout: ms.State, Traffic: plan.Traffic,
			Mirror: plan.Mirrored, Error: ms.Error, Held: ms.Held, Events: slices.Clone(ms.Events), Analysis: ms.State.Analysis,
		}
		m.Rollout.Analysis = nil
		st.Models = append(st.Models, m)
	}
	r.mu.Lock()
	r.status = st
	r.mu.Unlock()
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

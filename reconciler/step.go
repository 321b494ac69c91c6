package reconciler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"merlin.dev/merlin/metrics"
	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
)

// NewRolloutEvents returns the counter of rollout transitions, by
// repository, model and kind (deploy, step, promote, rollback, cancel,
// hold, analysis, ...), for Config.RolloutEvents. The daemon registers
// one and shares it among its reconcilers.
func NewRolloutEvents() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "merlin_rollout_events_total",
		Help: "Rollout transitions and analyses, by model and kind.",
	}, []string{"repo", "model", "kind"})
}

// stepAll advances every model's rollout and applies its plan.
func (r *Reconciler) stepAll(ctx context.Context) {
	observed := r.observeTarget(ctx)
	now := r.now()
	for _, name := range r.sortedModels() {
		r.stepModel(ctx, r.state.Models[name], observed[name], now)
	}
}

// observeTarget reads the target's status of this repository's models;
// the last good reading stands in when the target cannot be read.
func (r *Reconciler) observeTarget(ctx context.Context) map[string]serving.ModelStatus {
	st, err := r.target.Status(ctx)
	if err != nil {
		r.log.Warn("cannot read target status", "err", err)
		return r.observed
	}
	observed := make(map[string]serving.ModelStatus, len(r.state.Models))
	for _, m := range st {
		if r.state.Models[m.Name] != nil {
			observed[m.Name] = m
		}
	}
	r.observed = observed
	return observed
}

func (r *Reconciler) stepModel(ctx context.Context, ms *modelState, seen serving.ModelStatus, now time.Time) []rollout.Event {
	if ms.Desired == "" && ms.State.Stable == "" {
		return nil // nothing built yet
	}
	obs := r.observe(ctx, ms, seen)
	obs.Command, ms.command = ms.command, ""
	next, events := rollout.Step(ms.Rollout, ms.State, obs, now)
	for _, e := range events {
		if r.cfg.RolloutEvents != nil {
			r.cfg.RolloutEvents.WithLabelValues(r.cfg.Repo, ms.Name, e.Kind).Inc()
		}
		if e.Kind != "analysis" || !reflect.DeepEqual(next.Analysis, ms.State.Analysis) {
			r.log.Info("rollout", "model", ms.Name, "event", e.Kind, "version", e.Version, "reason", e.Reason)
		}
	}
	prevSince := ms.State.Since
	ms.State = next
	ms.record(now, events)
	r.apply(ctx, ms, now)
	r.startWindow(ctx, ms, prevSince)
	return events
}

// startWindow tells the metrics provider that a new analysis window began,
// right after its weights were applied, so that the window counts from
// now rather than from the next tick.
func (r *Reconciler) startWindow(ctx context.Context, ms *modelState, prevSince time.Time) {
	s := ms.State
	if r.metrics == nil || s.Candidate == "" || s.Since.Equal(prevSince) ||
		(s.Phase != rollout.Progressing && s.Phase != rollout.AwaitingPromotion) {
		return
	}
	if _, err := r.metrics.Window(ctx, metrics.Query{Model: ms.Name, Candidate: s.Candidate, Stable: s.Stable, Since: s.Since}); err != nil {
		r.log.Debug("cannot start the metrics window", "model", ms.Name, "err", err)
	}
}

// observe gathers what the rollout state machine needs to know. Whether a
// version is ready or has failed for good is the target's call, read from
// its conditions.
func (r *Reconciler) observe(ctx context.Context, ms *modelState, seen serving.ModelStatus) rollout.Observations {
	o := rollout.Observations{Desired: ms.Desired}
	if s, ok := seen.Version(ms.State.Stable); ok && s.Failed() {
		o.StableFailed = true
	}
	c := ms.State.Candidate
	if c == "" {
		return o
	}
	if s, ok := seen.Version(c); ok {
		o.CandidateReady = s.Ready()
		if s.Failed() {
			d, _ := serving.Find(s.Conditions, serving.Degraded)
			o.CandidateFailure = cmp.Or(d.Message, s.LastError, string(d.Reason))
		}
	}
	if p := ms.State.Phase; (p == rollout.Progressing || p == rollout.AwaitingPromotion) && r.metrics != nil {
		w, err := r.metrics.Window(ctx, metrics.Query{Model: ms.Name, Candidate: c, Stable: ms.State.Stable, Since: ms.State.Since})
		if err != nil {
			r.log.Warn("cannot read metrics", "model", ms.Name, "err", err)
		} else {
			o.Metrics = &w
		}
	}
	return o
}

// apply sends the rollout's plan to the target when it changed, or when
// it is time to re-assert it.
func (r *Reconciler) apply(ctx context.Context, ms *modelState, now time.Time) {
	plan := rollout.PlanFor(ms.Rollout, ms.State)
	if len(plan.Versions) == 0 {
		return
	}
	d := serving.Deployment{Model: ms.Name, Traffic: plan.Traffic}
	for _, id := range plan.Versions {
		v, ok := ms.Versions[id]
		if !ok {
			ms.setError(serving.ReasonRollout, fmt.Sprintf("internal: no build recorded for version %s", id))
			return
		}
		d.Versions = append(d.Versions, v)
	}
	if plan.Mirrored != "" {
		d.Mirrors = []serving.Mirror{{Version: plan.Mirrored, Percent: plan.MirrorPercent}}
	}
	if plan.Compared != "" {
		d.Compare = &serving.Compare{Version: plan.Compared, Baseline: ms.State.Stable, Percent: 100}
	}
	d = withPreviews(d, ms.Previews)
	if ms.applied != nil && reflect.DeepEqual(*ms.applied, d) && now.Sub(ms.appliedAt) < r.cfg.Resync {
		return
	}
	actx, cancel := context.WithTimeout(ctx, r.cfg.ApplyTimeout)
	err := r.target.Apply(actx, d)
	cancel()
	if err != nil {
		ms.setError(serving.ReasonServing, "apply: "+err.Error())
		r.log.Error("apply failed", "model", ms.Name, "err", err)
		return
	}
	ms.applied, ms.appliedAt = &d, now
	if ms.Reason == serving.ReasonServing {
		ms.setError("", "")
	}
	r.forgetVersions(ctx, ms, plan)
}

// forgetVersions drops builds nothing refers to any more, with their
// metrics and, when the builder can, their bundles on disk.
func (r *Reconciler) forgetVersions(ctx context.Context, ms *modelState, plan rollout.Plan) {
	keep := map[string]bool{ms.Desired: true}
	for _, id := range plan.Versions {
		keep[id] = true
	}
	forgot := false
	for id := range ms.Versions {
		if !keep[id] {
			delete(ms.Versions, id)
			forgot = true
			if f, ok := r.metrics.(metrics.Forgetter); ok {
				f.Forget(id)
			}
		}
	}
	if forgot {
		r.pruneBundles(ctx)
	}
}

type commandReq struct {
	model string
	cmd   rollout.Command
	reply chan CommandResult
}

// CommandResult is what a command did.
type CommandResult struct {
	Model  string          `json:"model"`
	Phase  rollout.Phase   `json:"phase"`
	Events []rollout.Event `json:"events"`
	Error  string          `json:"error,omitempty"`
}

// Command runs a person's rollout command on a model and returns what it
// did. It is applied on the reconciler's loop, like everything else.
func (r *Reconciler) Command(ctx context.Context, model string, cmd rollout.Command) (CommandResult, error) {
	req := commandReq{model: model, cmd: cmd, reply: make(chan CommandResult, 1)}
	select {
	case r.commands <- req:
	case <-ctx.Done():
		return CommandResult{}, ctx.Err()
	}
	select {
	case res := <-req.reply:
		if res.Error != "" {
			return res, errors.New(res.Error)
		}
		return res, nil
	case <-ctx.Done():
		return CommandResult{}, ctx.Err()
	}
}

func (r *Reconciler) command(ctx context.Context, c commandReq) CommandResult {
	ms := r.state.Models[c.model]
	if ms == nil {
		return CommandResult{Model: c.model, Error: fmt.Sprintf("%v: %s", errUnknownModel, c.model)}
	}
	ms.command = c.cmd
	events := r.stepModel(ctx, ms, r.observeTarget(ctx)[c.model], r.now())
	return CommandResult{Model: c.model, Phase: ms.State.Phase, Events: events}
}

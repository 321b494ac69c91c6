package reconciler

import (
	"context"
	"errors"
	"io/fs"
	"time"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
)

// A build runs off the reconciler's loop, so that a model that takes long
// to build (a large download, an image) never stalls the others: the loop
// starts it, goes on stepping rollouts and taking commands, and takes the
// result when it arrives. Builds are bounded by Config.Builds.

type buildJob struct {
	gen           int
	model, sha    string
	dir, settings string
	m             *manifest.Model
	tree          fs.FS
}

type buildResult struct {
	job     buildJob
	res     builder.Result
	lineage map[string]string // a fetched model's origin
	err     error
	took    time.Duration
}

// startBuild builds m in the background; a build of the same model still
// in flight is superseded (its result will be dropped).
func (r *Reconciler) startBuild(ctx context.Context, tree fs.FS, dir, settings string, m *manifest.Model, sha string, ms *modelState) {
	r.buildGen++
	job := buildJob{gen: r.buildGen, model: ms.Name, sha: sha, dir: dir, settings: settings, m: m, tree: tree}
	ms.building, ms.BuildPending = job.gen, true
	go func() {
		select {
		case r.buildSlots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		start := time.Now()
		var (
			res     builder.Result
			lineage map[string]string
			err     error
		)
		if remote(job.m) {
			res, lineage, err = r.fetchRemote(ctx, job.m)
		} else {
			res, err = r.builder.Build(job.tree, job.dir, job.m)
		}
		<-r.buildSlots
		select {
		case r.builds <- buildResult{job: job, res: res, lineage: lineage, err: err, took: time.Since(start)}:
		case <-ctx.Done():
		}
	}()
}

// finishBuild takes a build's result on the loop: a new desired version,
// or an error that keeps the last good version serving.
func (r *Reconciler) finishBuild(ctx context.Context, b buildResult) {
	ms := r.state.Models[b.job.model]
	if ms == nil || ms.building != b.job.gen {
		return // the model was removed, or a newer build superseded this one
	}
	ms.building, ms.BuildPending = 0, false
	if b.err != nil {
		// Files changed by this revision are not in the next diff: the next
		// revision builds the model again whatever it changes, so a
		// transient failure does not leave HEAD undeployed for good.
		ms.Held, ms.Resync = true, true
		reason := serving.ReasonBuild
		var se *sourceError
		if errors.As(b.err, &se) {
			reason = serving.ReasonSource
		}
		if ms.Error != b.err.Error() {
			r.log.Warn("build failed; keeping the last good version", "model", ms.Name, "reason", reason, "err", b.err)
		}
		ms.setError(reason, b.err.Error())
		return
	}
	v := r.version(b.job.m, b.res.Digest, b.res.Bundle, b.job.sha)
	for k, val := range b.lineage {
		v.Annotations[k] = val
	}
	changed := v.ID != ms.Desired
	ms.Dir, ms.Settings, ms.Desired, ms.SHA = b.job.dir, b.job.settings, v.ID, b.job.sha
	switch {
	case remote(b.job.m) && ms.Reason == serving.ReasonSource:
		ms.Held = false // fetched: the source is back
		ms.setError("", "")
	case ms.Held && (ms.Reason == serving.ReasonManifest || ms.Reason == serving.ReasonSource):
		// The manifest broke after this build started: the build is of a
		// good revision, but the head is still broken and must say so
		// (Resync, set then, builds the fixed head again).
	case ms.Reason != serving.ReasonServing:
		ms.Held = false
		ms.setError("", "")
	default:
		ms.Held = false
	}
	ms.Versions[v.ID] = v
	if changed {
		r.log.Info("built model", "model", ms.Name, "version", v.ID, "took", b.took.Round(time.Millisecond))
	}
	r.stepModel(ctx, ms, r.observeTarget(ctx)[ms.Name], r.now())
}

// pruneBundles deletes the bundles that none of this repository's models
// refers to, when the builder can. The builder must be this repository's
// own (the daemon gives each repository one), since what it keeps is only
// what this reconciler knows.
func (r *Reconciler) pruneBundles(ctx context.Context) {
	p, ok := r.builder.(Pruner)
	if !ok {
		return
	}
	keep := map[string]bool{}
	for _, ms := range r.state.Models {
		if ms.building != 0 {
			return // its bundle is not referenced yet; prune after it lands
		}
		for _, v := range ms.Versions {
			keep[v.Digest] = true
		}
		for _, p := range ms.Previews {
			keep[p.Version.Digest] = true
		}
	}
	st, err := p.Prune(ctx, keep)
	if err != nil {
		r.log.Warn("cannot prune bundles", "err", err)
		return
	}
	r.log.Debug("pruned bundles", "stats", st)
}

package reconciler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"sync"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
)

// A pull request's previews are computed from its head: every model whose
// version differs from production's runs as a shadow of production's
// stable version. The head is read and its models built beside the loop,
// like production's builds (and in the same slots); only the decision and
// its application are on the loop, where production's state is. The
// policy (whether a model is previewed, at which mirror percent) is
// production's: a pull request only supplies the model's files and the
// settings needed to serve them.

// PreviewResult is what became of one model of a pull request's head.
type PreviewResult struct {
	Model string `json:"model"`
	File  string `json:"file"` // the manifest in the pull request's head
	// Version is the pull request's version of the model ("" when it could not be built).
	Version string `json:"version,omitempty"`
	// Previewed: the version is mirrored beside production as the pull request's preview.
	Previewed bool `json:"previewed,omitempty"`
	// Changed: the version differs from production's desired version (or the model is new, or broken in the PR).
	Changed bool `json:"changed,omitempty"`
	// Note says why a changed model is not previewed ("new model: it deploys when merged", "previews are disabled for this model in production's merlin.yaml").
	Note string `json:"note,omitempty"`
	// Error is the pull request's problem with the model (a manifest error as path:line:col: message, a build failure) and Reason which part failed (serving.ReasonManifest, ReasonSource, ReasonBuild).
	Error  string         `json:"error,omitempty"`
	Reason serving.Reason `json:"reason,omitempty"`
}

// Notes of models that changed but are not previewed.
const (
	noteNewModel = "new model: it deploys when merged"
	noteDisabled = "previews are disabled for this model in production's merlin.yaml"
)

// previewCandidate is one model of a pull request's head: to build (m and
// dir set), built (version set), or broken (result.Error set).
type previewCandidate struct {
	result  PreviewResult
	m       *manifest.Model
	dir     string
	version serving.Version
}

// PreviewRevision computes pull request pr's previews from its head commit sha
// (already fetched into the source, so r.src.Tree(sha) reads it): it loads the
// head's manifests, builds each valid model off the loop (bounded by the same
// build slots), and on the loop replaces the pull request's previews with the
// models whose version differs from production's. It returns one result per
// model declared in the head (sorted by name); an error only when the head as a
// whole cannot be read (unreadable tree, bad search paths, manifests that cannot be loaded),
// when ctx ends, or (ErrSuperseded) when a later PreviewRevision or
// RemovePreviews of the same pull request was applied first.
//
// A file that does not parse yields one result per model named in the
// documents read before the error, or, when none is, one result with the
// file and no model; each carries the file's errors. Models without a
// name are reported together, likewise, in one result per file.
func (r *Reconciler) PreviewRevision(ctx context.Context, pr int, sha string) ([]PreviewResult, error) {
	seq := r.previewSeq.Add(1) // a later call, or a removal, wins
	tree, err := r.src.Tree(sha)
	if err != nil {
		return nil, fmt.Errorf("pull request #%d: read %s: %w", pr, short(sha), err)
	}
	if err := checkPaths(tree, r.cfg.Paths); err != nil {
		return nil, fmt.Errorf("pull request #%d at %s: %w", pr, short(sha), err)
	}
	files, err := manifest.Load(tree, r.cfg.Paths...)
	if err != nil {
		return nil, fmt.Errorf("pull request #%d at %s: %w", pr, short(sha), err)
	}
	cands := r.previewCandidates(files)
	if err := r.buildPreviews(ctx, tree, sha, cands); err != nil {
		return nil, err
	}
	var results []PreviewResult
	if err := r.sendPreview(ctx, previewReq{pr: pr, replace: cands, results: &results, seq: seq}); err != nil {
		return nil, err
	}
	r.log.Info("previewed pull request", "pr", pr, "sha", short(sha), "models", len(results))
	return results, nil
}

// PRModels returns the names of the models pull request pr previews now.
func (r *Reconciler) PRModels(pr int) []string {
	var names []string
	for _, m := range r.Status().Models {
		if slices.ContainsFunc(m.Versions, func(v serving.VersionStatus) bool { return v.Role == serving.RolePreview && v.PR == pr }) {
			names = append(names, m.Name)
		}
	}
	return names
}

// previewCandidates checks the models of a pull request's head as declare
// does production's: the valid ones are to build, the others are broken.
func (r *Reconciler) previewCandidates(files []*manifest.File) []previewCandidate {
	var out []previewCandidate
	broken := func(name, file string, reason serving.Reason, msg string) {
		out = append(out, previewCandidate{result: PreviewResult{Model: name, File: file, Changed: true, Error: msg, Reason: reason}})
	}
	for _, f := range files {
		if len(f.Errors) > 0 {
			// Nothing in the file can be trusted; the names read say which
			// models the pull request broke.
			msg, named := f.AllErrors().Error(), false
			for _, m := range f.Models {
				if m.Metadata.Name != "" {
					broken(m.Metadata.Name, f.Name, serving.ReasonManifest, msg)
					named = true
				}
			}
			if !named {
				broken("", f.Name, serving.ReasonManifest, msg)
			}
			continue
		}
		var unnamed manifest.ErrorList
		for _, m := range f.Models {
			name := m.Metadata.Name
			if name == "" {
				unnamed = append(unnamed, m.Errors...)
				continue
			}
			if len(m.Errors) > 0 {
				broken(name, f.Name, serving.ReasonManifest, m.Errors.Error())
				continue
			}
			if err := m.CheckComparison(r.cfg.TargetName, r.compares()); err != nil {
				broken(name, f.Name, serving.ReasonManifest, err.Error())
				continue
			}
			dir := ""
			if !remote(m) || r.cfg.Fetcher == nil {
				var err error
				if dir, err = r.sourceDir(m); err != nil {
					broken(name, f.Name, serving.ReasonSource, err.Error())
					continue
				}
			}
			out = append(out, previewCandidate{result: PreviewResult{Model: name, File: f.Name}, m: m, dir: dir})
		}
		if len(unnamed) > 0 {
			broken("", f.Name, serving.ReasonManifest, unnamed.Error())
		}
	}
	return out
}

// buildPreviews builds the candidates to build, at once within the build
// slots, and records each one's version or failure. It returns when all
// are done, or ctx's error when it ended.
func (r *Reconciler) buildPreviews(ctx context.Context, tree fs.FS, sha string, cands []previewCandidate) error {
	var wg sync.WaitGroup
	for i := range cands {
		c := &cands[i]
		if c.m == nil {
			continue
		}
		wg.Go(func() {
			select {
			case r.buildSlots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			var (
				res     builder.Result
				lineage map[string]string
				err     error
			)
			if remote(c.m) { // the pull request names another MLflow version
				res, lineage, err = r.fetchRemote(ctx, c.m)
			} else {
				res, err = r.builder.Build(tree, c.dir, c.m)
			}
			<-r.buildSlots
			if err != nil {
				reason := serving.ReasonBuild
				var se *sourceError
				if errors.As(err, &se) {
					reason = serving.ReasonSource
				}
				c.result.Changed, c.result.Error, c.result.Reason = true, err.Error(), reason
				return
			}
			c.version = r.version(c.m, res.Digest, res.Bundle, sha)
			maps.Copy(c.version.Annotations, lineage)
			c.result.Version = c.version.ID
		})
	}
	wg.Wait()
	return ctx.Err()
}

// decidePreviews decides, from production's models, which of pull request
// pr's built candidates are previewed: those production serves from this
// repository (repo; owner says who serves a name) with a stable version,
// whose version differs from production's desired one, and whose
// production policy enables previews, mirrored at production's percent.
// It returns the pull request's previews by model and every candidate's
// result, sorted by model and file.
func decidePreviews(pr int, cands []previewCandidate, models map[string]*modelState, repo string, owner func(string) string) (map[string]Preview, []PreviewResult) {
	set := map[string]Preview{}
	results := make([]PreviewResult, 0, len(cands))
	for _, c := range cands {
		res := c.result
		if res.Error == "" {
			ms := models[res.Model]
			switch o := owner(res.Model); {
			case o != "" && o != repo:
				res.Changed, res.Note = true, fmt.Sprintf("served from repository %s: not previewed here", o)
			case ms == nil || ms.Desired == "" || ms.State.Stable == "":
				res.Changed, res.Note = true, noteNewModel
			case c.version.ID == ms.Desired:
				// unchanged: production serves it (or is rolling it out)
			case !ms.previewPolicy().Enabled:
				res.Changed, res.Note = true, noteDisabled
			default:
				res.Changed, res.Previewed = true, true
				set[res.Model] = Preview{PR: pr, Version: c.version, Percent: ms.previewPolicy().MirrorPercent}
			}
		}
		results = append(results, res)
	}
	slices.SortStableFunc(results, func(a, b PreviewResult) int {
		return cmp.Or(cmp.Compare(a.Model, b.Model), cmp.Compare(a.File, b.File))
	})
	return set, results
}

// replacePreviews makes set pull request pr's previews, on the loop: a
// model it previewed and set leaves out loses its preview. The models
// whose previews changed are applied at once; bundles no longer referred
// to are pruned.
func (r *Reconciler) replacePreviews(ctx context.Context, pr int, set map[string]Preview) {
	var observed map[string]serving.ModelStatus
	prune := false
	for _, name := range r.sortedModels() {
		ms := r.state.Models[name]
		old, had := ms.Previews[pr]
		p, want := set[name]
		switch {
		case want:
			if ms.Previews == nil {
				ms.Previews = map[int]Preview{}
			}
			ms.Previews[pr] = p
			prune = prune || (had && old.Version.Digest != p.Version.Digest)
		case had:
			delete(ms.Previews, pr)
			prune = true
		default:
			continue
		}
		if observed == nil {
			observed = r.observeTarget(ctx)
		}
		r.stepModel(ctx, ms, observed[name], r.now())
	}
	if prune {
		r.pruneBundles(ctx)
	}
}

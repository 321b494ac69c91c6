package reconciler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"merlin.dev/merlin/serving"
)

// Preview is a version of a model shown beside production without ever
// answering clients: a pull request's head, mirrored a share of
// production's requests and compared with production's answers. Several
// previews of one model run at once, beside a shadow rollout.
type Preview struct {
	PR      int             `json:"pr"`
	Version serving.Version `json:"version"`
	Percent int             `json:"percent"`
}

type previewReq struct {
	model    string
	pr       int
	previews []Preview // nil removes the pull request's previews
	// replace, set by PreviewRevision, carries the pull request's built
	// versions: the loop decides which are previewed, replaces the pull
	// request's previews with them and writes what became of each to
	// results before replying.
	replace []previewCandidate
	results *[]PreviewResult
	// seq orders a pull request's replacements and removals (0: unordered,
	// SetPreview): one older than the latest applied is dropped.
	seq   uint64
	reply chan error
}

// ErrSuperseded is returned by PreviewRevision when a later
// PreviewRevision or RemovePreviews of the same pull request was applied
// first: its previews stand, this one's are dropped.
var ErrSuperseded = errors.New("superseded by a later preview of the pull request")

// SetPreview shows v as pull request pr's preview of its model, mirrored
// at percent; a later call for the same pull request replaces it. It is
// applied on the reconciler's loop.
func (r *Reconciler) SetPreview(ctx context.Context, pr int, v serving.Version, percent int) error {
	if percent < 1 || percent > 100 {
		return fmt.Errorf("preview of %s: mirror percent %d: want 1–100", v.ID, percent)
	}
	return r.sendPreview(ctx, previewReq{model: v.Model, pr: pr, previews: []Preview{{PR: pr, Version: v, Percent: percent}}})
}

// RemovePreviews removes pull request pr's previews of every model (the
// pull request closed).
func (r *Reconciler) RemovePreviews(ctx context.Context, pr int) error {
	return r.sendPreview(ctx, previewReq{pr: pr, seq: r.previewSeq.Add(1)})
}

func (r *Reconciler) sendPreview(ctx context.Context, req previewReq) error {
	req.reply = make(chan error, 1)
	select {
	case r.previews <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// preview takes a preview request on the loop. The status is published
// before the reply, so that Status and PRModels show what the caller did.
func (r *Reconciler) preview(ctx context.Context, req previewReq) error {
	defer r.publish()
	if req.seq != 0 {
		if req.seq < r.prSeq[req.pr] {
			return fmt.Errorf("pull request #%d: %w", req.pr, ErrSuperseded)
		}
		if r.prSeq == nil {
			r.prSeq = map[int]uint64{}
		}
		r.prSeq[req.pr] = req.seq
	}
	if req.results != nil {
		set, results := decidePreviews(req.pr, req.replace, r.state.Models, r.cfg.Repo, r.claims.Owner)
		r.replacePreviews(ctx, req.pr, set)
		*req.results = results
		return nil
	}
	if req.previews == nil {
		for _, ms := range r.state.Models {
			if _, ok := ms.Previews[req.pr]; ok {
				delete(ms.Previews, req.pr)
				r.stepModel(ctx, ms, r.observeTarget(ctx)[ms.Name], r.now())
			}
		}
		r.pruneBundles(ctx)
		return nil
	}
	ms := r.state.Models[req.model]
	if ms == nil {
		return fmt.Errorf("%w: %s", errUnknownModel, req.model)
	}
	if ms.Previews == nil {
		ms.Previews = map[int]Preview{}
	}
	ms.Previews[req.pr] = req.previews[0]
	r.stepModel(ctx, ms, r.observeTarget(ctx)[ms.Name], r.now())
	return nil
}

// withPreviews adds the model's previews to its deployment as mirrors. A
// preview of a version production already runs is not mirrored twice.
func withPreviews(d serving.Deployment, previews map[int]Preview) serving.Deployment {
	for _, pr := range slices.Sorted(maps.Keys(previews)) {
		p := previews[pr]
		if slices.ContainsFunc(d.Versions, func(v serving.Version) bool { return v.ID == p.Version.ID }) {
			continue
		}
		d.Versions = append(d.Versions, p.Version)
		d.Traffic = maps.Clone(d.Traffic)
		d.Traffic[p.Version.ID] = 0
		d.Mirrors = append(d.Mirrors, serving.Mirror{Version: p.Version.ID, Percent: p.Percent})
	}
	return d
}

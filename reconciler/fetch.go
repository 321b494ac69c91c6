package reconciler

import (
	"context"
	"io/fs"
	"maps"
	"slices"
	"time"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/manifest"
)

// Models whose files are not in the repository (source.mlflow) are
// fetched by a Fetcher: their reference is resolved afresh on every
// revision and every Config.SourceInterval, off the loop like a build, so
// that an MLflow alias moved to another version deploys like a commit,
// and a reference that fails to resolve holds only its own model.

// Fetcher fetches the files of a model whose source is not in the
// repository, resolving its reference now.
type Fetcher interface {
	Fetch(ctx context.Context, m *manifest.Model) (Fetched, error)
}

// Fetched is a model directory a Fetcher produced.
type Fetched struct {
	// FS holds the model directory at its root.
	FS fs.FS
	// Lineage is where the files came from (MLflow run, registered
	// version, alias, artifact digest), added to the version's
	// annotations.
	Lineage map[string]string
	// Downloaded counts the bytes this fetch downloaded (0: cached).
	Downloaded int64
}

// remote reports whether m's files come from outside the repository.
func remote(m *manifest.Model) bool { return m.Spec.Source.MLflow != "" }

// remoteDir identifies a remote model's source in the state, as Dir does
// for a model in the repository.
func remoteDir(m *manifest.Model) string { return "mlflow:" + m.Spec.Source.MLflow }

// fetchRemote resolves and fetches m, then builds the version from what
// was fetched; it runs off the loop, in a build slot.
func (r *Reconciler) fetchRemote(ctx context.Context, m *manifest.Model) (builder.Result, map[string]string, error) {
	got, err := r.cfg.Fetcher.Fetch(ctx, m)
	if err != nil {
		return builder.Result{}, nil, &sourceError{err}
	}
	res, err := r.builder.Build(got.FS, ".", m)
	if got.Downloaded > 0 {
		r.log.Info("fetched model files", "model", m.Metadata.Name, "source", m.Spec.Source.MLflow, "bytes", got.Downloaded)
	}
	return res, got.Lineage, err
}

// sourceError marks a build that failed before building: the source
// could not be resolved or fetched.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// refreshRemote re-resolves every model with a remote source, from the
// manifest the last revision declared, unless a build of it is running.
func (r *Reconciler) refreshRemote(ctx context.Context) {
	for _, name := range slices.Sorted(maps.Keys(r.state.Models)) {
		ms := r.state.Models[name]
		if ms.remote == nil || ms.building != 0 {
			continue
		}
		r.startBuild(ctx, nil, remoteDir(ms.remote), string(builder.Settings(ms.remote)), ms.remote, r.state.SHA, ms)
	}
}

// sourceInterval is how often remote sources are resolved again.
func (r *Reconciler) sourceInterval() time.Duration {
	if r.cfg.SourceInterval > 0 {
		return r.cfg.SourceInterval
	}
	return time.Minute
}

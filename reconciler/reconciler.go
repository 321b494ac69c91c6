// Package reconciler keeps what a target serves equal to what a Git
// repository declares. It is level-triggered, like Flux's controllers:
// desired state is the models declared at the branch head; observed state
// is what the target runs; every pass recomputes the difference.
//
// One Reconciler owns one repository and runs one loop, so its state needs
// no locks beyond the snapshot it publishes for the API. The loop reacts to
// five things: a new revision from the git poller (load manifests, start
// builds of what changed, prune what was removed), a finished build (a new
// desired version), a rollout tick or a change the target reports
// (observe, step the rollout state machine, apply its plan), and a
// person's command (promote, rollback, pause, resume). Nothing on the loop
// waits for a slow model: builds run beside it, and the serving target's
// Apply records the desired state and returns; readiness is observed.
//
// The loop publishes each model in the one status shape the API serves
// (serving.ModelStatus): its state merged with the target's observations,
// with conditions whose reasons say which part failed.
package reconciler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/gitsource"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/metrics"
	"merlin.dev/merlin/serving"
)

// Source is the part of a git source the reconciler reads.
type Source interface {
	Tree(sha string) (fs.FS, error)
	ChangedFull(ctx context.Context, from, to string) ([]string, bool, error)
}

// Config configures one repository's reconciler.
type Config struct {
	// Repo names the repository (in status, labels and the state file).
	Repo string
	// URL is the repository's address without credentials, for labels.
	URL string
	// Paths are the directories searched for merlin.yaml ("." when empty).
	Paths []string
	// StateDir holds the reconciler's state file.
	StateDir string
	// State, when set, keeps the state instead of the file in StateDir.
	State StateStore
	// Tick is how often rollouts are stepped. Default 1s.
	Tick time.Duration
	// ApplyTimeout bounds each call to the target, which records the
	// desired state and returns (it never waits for readiness). Default 5s.
	ApplyTimeout time.Duration
	// Builds bounds the builds run at once. Default 2.
	Builds int
	// TargetName names the target in errors ("local", "kubernetes").
	TargetName string
	// RolloutEvents, when set, counts rollout transitions by repo, model
	// and kind (see NewRolloutEvents).
	RolloutEvents *prometheus.CounterVec
	// Resync re-applies unchanged deployments this often, correcting drift
	// on the target. Default 5m.
	Resync time.Duration
	// Fetcher fetches models whose source is not in the repository
	// (source.mlflow); without one they are an error.
	Fetcher Fetcher
	// SourceInterval is how often those sources are resolved again
	// between revisions (an MLflow alias moved). Default 1m.
	SourceInterval time.Duration
}

// Builder builds a version of a model from its files: a content digest
// and a bundle. *builder.Builder is the real one.
type Builder interface {
	Build(fsys fs.FS, dir string, m *manifest.Model) (builder.Result, error)
}

// Pruner is a Builder that can delete the bundles no version refers to.
type Pruner interface {
	Prune(ctx context.Context, keep map[string]bool) (builder.PruneStats, error) // keep: digests still referenced
}

// Reconciler reconciles one repository.
type Reconciler struct {
	cfg     Config
	src     Source
	target  serving.Target
	builder Builder
	metrics metrics.Provider
	claims  *Claims
	log     *slog.Logger
	now     func() time.Time

	commands chan commandReq
	previews chan previewReq
	// previewSeq issues the order of pull requests' preview replacements
	// and removals; prSeq, on the loop, is the latest applied of each pull
	// request, so that an older one arriving late is dropped.
	previewSeq atomic.Uint64
	prSeq      map[int]uint64
	state      *repoState
	store      StateStore
	// builds delivers finished builds to the loop; buildSlots bounds them.
	builds     chan buildResult
	buildSlots chan struct{}
	buildGen   int
	// observed is the target's status of each model at the last step.
	observed map[string]serving.ModelStatus

	repoError  string
	fileErrors map[string]string
	// saves follows the state's saves, to log a failure once (and again
	// at most every saveErrorEvery) and to show it in Status.
	saves saveHealth

	mu     sync.RWMutex
	status Status
}

// New returns a reconciler; state from a previous run is loaded from
// StateDir, so rollouts resume where they were.
func New(ctx context.Context, cfg Config, src Source, t serving.Target, b Builder, m metrics.Provider, claims *Claims, log *slog.Logger) (*Reconciler, error) {
	if cfg.Tick == 0 {
		cfg.Tick = time.Second
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 5 * time.Second
	}
	if cfg.Resync == 0 {
		cfg.Resync = 5 * time.Minute
	}
	cfg.Builds = cmp.Or(cfg.Builds, 2)
	cfg.TargetName = cmp.Or(cfg.TargetName, "this")
	cfg.Paths = CleanPaths(cfg.Paths)
	if claims == nil {
		claims = NewClaims()
	}
	store := cfg.State
	if store == nil {
		store = FileStore{Path: filepath.Join(cfg.StateDir, "repos", cfg.Repo+".json"), Logger: log}
	}
	st, err := loadState(ctx, store)
	if err != nil {
		return nil, err
	}
	r := &Reconciler{
		cfg: cfg, src: src, target: t, builder: b, metrics: m, claims: claims,
		log: log.With("repo", cfg.Repo), now: time.Now,
		commands: make(chan commandReq), previews: make(chan previewReq), state: st, store: store,
		builds: make(chan buildResult), buildSlots: make(chan struct{}, cfg.Builds),
		observed: map[string]serving.ModelStatus{},
	}
	for name := range st.Models {
		claims.Claim(name, cfg.Repo)
	}
	r.publish()
	return r, nil
}

// Run reconciles until ctx ends, taking revisions from events.
func (r *Reconciler) Run(ctx context.Context, events <-chan gitsource.Event) error {
	tick := time.NewTicker(r.cfg.Tick)
	defer tick.Stop()
	sources := time.NewTicker(r.sourceInterval())
	defer sources.Stop()
	var changes <-chan struct{}
	if n, ok := r.target.(serving.Notifier); ok {
		changes = n.Changes()
	}
	r.stepAll(ctx) // resume rollouts and re-apply what the state says
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-events:
			r.reconcileRevision(ctx, ev)
			r.stepAll(ctx)
		case <-tick.C:
			r.stepAll(ctx)
		case <-sources.C:
			r.refreshRemote(ctx)
		case <-changes:
			r.stepAll(ctx)
		case c := <-r.commands:
			c.reply <- r.command(ctx, c)
		case b := <-r.builds:
			r.finishBuild(ctx, b)
		case p := <-r.previews:
			p.reply <- r.preview(ctx, p)
		}
		// What this iteration did is saved even when ctx ended meanwhile
		// (a shutdown right after a command): the store bounds the write.
		r.save(context.WithoutCancel(ctx))
		r.publish()
	}
}

// reconcileRevision loads the manifests of a new head, builds the models
// whose files changed, and prunes models that are no longer declared.
func (r *Reconciler) reconcileRevision(ctx context.Context, ev gitsource.Event) {
	sha := ev.Revision.SHA
	log := r.log.With("sha", short(sha))
	changed, full := r.changedSince(ctx, ev)
	tree, err := r.src.Tree(sha)
	if err != nil {
		r.setRepoError(fmt.Sprintf("read %s: %v", short(sha), err))
		r.state.ResyncAll = true // what changed meanwhile is compared with the last good revision
		return
	}
	if err := checkPaths(tree, r.cfg.Paths); err != nil {
		// A mistyped path must not look like a repository with no models
		// (which would delete them all): nothing is reconciled until it is
		// fixed.
		r.setRepoError(fmt.Sprintf("at %s: %v", short(sha), err))
		r.state.ResyncAll = true
		return
	}
	files, err := manifest.Load(tree, r.cfg.Paths...)
	if err != nil {
		r.setRepoError(err.Error())
		r.state.ResyncAll = true
		return
	}
	r.state.ResyncAll = false
	r.setRepoError("")
	r.fileErrors = map[string]string{}
	for _, ms := range r.state.Models {
		ms.Held = false // held again below while its manifest is broken
	}
	declared := map[string]bool{}
	for _, f := range files {
		if len(f.Errors) > 0 {
			// A syntax error: nothing in the file can be trusted, not even
			// the documents before it.
			r.holdFile(f.Name, f.AllErrors(), declared)
			continue
		}
		for _, m := range f.Models {
			if m.Metadata.Name == "" {
				continue
			}
			declared[m.Metadata.Name] = true
			r.declare(ctx, tree, m, sha, changed, full)
		}
		if errs := f.AllErrors(); len(errs) > 0 {
			r.holdFile(f.Name, errs, declared)
		}
	}
	r.prune(ctx, declared)
	r.state.SHA = sha
	log.Info("reconciled revision", "models", len(declared), "changed", len(changed), "full", full)
}

// changedSince returns the paths changed between the last revision this
// reconciler reconciled and ev's, or full when it cannot tell. The
// poller's diff is relative to the revision it delivered before, which is
// the same only when that one was reconciled: after a revision that
// failed, a restart (the poller starts from scratch) or a leadership
// change (the state was saved by another replica), the diff is recomputed
// from the state's revision, so that no change in between is lost.
func (r *Reconciler) changedSince(ctx context.Context, ev gitsource.Event) ([]string, bool) {
	last, sha := r.state.SHA, ev.Revision.SHA
	if last == "" || (last == ev.Previous && !ev.Full && !r.state.ResyncAll) {
		return ev.Changed, ev.Full || r.state.ResyncAll
	}
	if last == sha {
		return ev.Changed, true
	}
	paths, full, err := r.src.ChangedFull(ctx, last, sha)
	if err != nil {
		r.log.Warn("cannot diff with the last reconciled revision; rebuilding everything", "from", short(last), "err", err)
		return ev.Changed, true
	}
	return paths, full
}

// declare takes a model declared at the head: a broken manifest holds it;
// a good one is built when its files or serving settings changed.
func (r *Reconciler) declare(ctx context.Context, tree fs.FS, m *manifest.Model, sha string, changed []string, full bool) {
	name := m.Metadata.Name
	if owner := r.claims.Claim(name, r.cfg.Repo); owner != r.cfg.Repo {
		r.modelError(name, m.File, fmt.Sprintf("%s:%d:%d: model %q is already served from repository %s", m.File, m.Pos("metadata.name").Line, m.Pos("metadata.name").Column, name, owner))
		return
	}
	ms := r.state.Models[name]
	if ms == nil {
		ms = &modelState{Name: name, Versions: map[string]serving.Version{}}
		r.state.Models[name] = ms
	}
	ms.File = m.File
	if len(m.Errors) > 0 {
		ms.Held, ms.Resync = true, true
		ms.setError(serving.ReasonManifest, m.Errors.Error())
		r.log.Warn("manifest invalid; keeping the last good version", "model", name, "err", ms.Error)
		return
	}
	if err := m.CheckComparison(r.cfg.TargetName, r.compares()); err != nil {
		ms.Held, ms.Resync = true, true
		ms.setError(serving.ReasonManifest, err.Error())
		return
	}
	if remote(m) {
		r.declareRemote(ctx, m, sha, ms)
		return
	}
	ms.remote = nil
	dir, err := r.sourceDir(m)
	if err != nil {
		ms.Held, ms.Resync = true, true
		ms.setError(serving.ReasonSource, err.Error())
		return
	}
	settings := string(builder.Settings(m))
	touched := full || ms.Desired == "" || ms.Dir != dir || ms.Settings != settings || touches(changed, dir) ||
		ms.Resync || (ms.BuildPending && ms.building == 0)
	ms.Resync = false
	ms.Rollout, ms.Preview, ms.Held = m.Spec.Rollout, m.Spec.Preview, false
	if !touched {
		if v, ok := ms.Versions[ms.Desired]; ok {
			ms.Versions[ms.Desired] = r.version(m, v.Digest, v.Bundle, ms.SHA) // labels may change without a build
		}
		if ms.Reason == serving.ReasonManifest || ms.Reason == serving.ReasonSource {
			ms.setError("", "")
		}
		return
	}
	r.startBuild(ctx, tree, dir, settings, m, sha, ms)
}

// declareRemote takes a model whose files are fetched (source.mlflow):
// its reference is resolved again on every revision, since what it names
// may have moved without a commit.
func (r *Reconciler) declareRemote(ctx context.Context, m *manifest.Model, sha string, ms *modelState) {
	if r.cfg.Fetcher == nil {
		ms.Held, ms.Resync = true, true
		ms.setError(serving.ReasonSource, m.Errorf("spec.source.mlflow", "no MLflow tracking server is configured: set spec.trackingURI, mlflow.trackingURI in the daemon's configuration, or MLFLOW_TRACKING_URI").Error())
		return
	}
	ms.remote, ms.Resync = m, false
	ms.Rollout, ms.Preview = m.Spec.Rollout, m.Spec.Preview
	r.startBuild(ctx, nil, remoteDir(m), string(builder.Settings(m)), m, sha, ms)
}

// sourceDir returns the model directory of m in the repository.
func (r *Reconciler) sourceDir(m *manifest.Model) (string, error) {
	if m.Spec.Source.Path == "" {
		return "", m.Errorf("spec.source", "only source.path and source.mlflow are supported so far; uri sources are coming")
	}
	return builder.SourceDir(m, path.Dir(m.File))
}

// version is the version of m built as digest into bundle at commit sha.
func (r *Reconciler) version(m *manifest.Model, digest, bundle, sha string) serving.Version {
	v := builder.Version(m, digest, builder.Origin{Repo: r.cfg.URL, Commit: sha})
	v.Bundle = bundle
	return v
}

// touches reports whether any changed path is dir or lies under it.
func touches(changed []string, dir string) bool {
	for _, p := range changed {
		if p == dir || strings.HasPrefix(p, dir+"/") || dir == "." {
			return true
		}
	}
	return false
}

// holdFile keeps serving the models a broken file declared before and
// does not declare validly now: a document whose name cannot be read, or a
// file that does not parse, must not make its models look deleted.
func (r *Reconciler) holdFile(file string, errs manifest.ErrorList, declared map[string]bool) {
	msg := errs.Error()
	held := 0
	for name, ms := range r.state.Models {
		if ms.File == file && !declared[name] {
			ms.Held, ms.Resync = true, true
			ms.setError(serving.ReasonManifest, msg)
			held++
		}
	}
	r.log.Warn("manifest invalid; keeping the last good versions", "file", file, "held", held, "err", msg)
	r.setFileError(file, msg)
}

func (r *Reconciler) modelError(name, file, msg string) {
	if ms := r.state.Models[name]; ms != nil {
		ms.setError(serving.ReasonManifest, msg)
		return
	}
	r.setFileError(file, msg)
}

// prune deletes models no longer declared. Held models are declared.
func (r *Reconciler) prune(ctx context.Context, declared map[string]bool) {
	for name, ms := range r.state.Models {
		if declared[name] || ms.Held {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, r.cfg.ApplyTimeout)
		err := r.target.Delete(actx, name)
		cancel()
		if err != nil {
			ms.setError(serving.ReasonServing, fmt.Sprintf("delete: %v", err))
			r.log.Error("cannot delete removed model", "model", name, "err", err)
			continue
		}
		delete(r.state.Models, name)
		r.claims.Release(name, r.cfg.Repo)
		if f, ok := r.metrics.(metrics.Forgetter); ok {
			for id := range ms.Versions {
				f.Forget(id)
			}
		}
		r.log.Info("model removed from the repository; deleted", "model", name)
	}
}

// compares reports whether the target compares predictions.
func (r *Reconciler) compares() bool {
	_, ok := r.target.(serving.Comparer)
	return ok
}

func (r *Reconciler) save(ctx context.Context) {
	err := saveState(ctx, r.store, r.state)
	r.logSave(err, r.saves.observe(err, r.now()))
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// Claims records which repository serves each model name, so two
// repositories cannot fight over one endpoint.
type Claims struct {
	mu     sync.Mutex
	owners map[string]string
}

// NewClaims returns an empty registry.
func NewClaims() *Claims { return &Claims{owners: map[string]string{}} }

// Claim gives name to repo unless another repository has it, and returns
// the owner.
func (c *Claims) Claim(name, repo string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, ok := c.owners[name]; ok {
		return o
	}
	c.owners[name] = repo
	return repo
}

// Owner returns the repository that serves name ("" when none does),
// without claiming it.
func (c *Claims) Owner(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.owners[name]
}

// Release gives up repo's claim on name.
func (c *Claims) Release(name, repo string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.owners[name] == repo {
		delete(c.owners, name)
	}
}

var errUnknownModel = errors.New("unknown model")

// sortedModels returns the model names in order.
func (r *Reconciler) sortedModels() []string {
	names := make([]string, 0, len(r.state.Models))
	for n := range r.state.Models {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

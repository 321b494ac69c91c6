package reconciler

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"merlin.dev/merlin/internal/atomicfile"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
)

// repoState is what the reconciler remembers about a repository across
// restarts: the last reconciled revision and every model's versions and
// rollout state.
type repoState struct {
	SHA string `json:"sha,omitempty"`
	// ResyncAll is set when a revision could not be read: the next one is
	// compared in full, so that no change made meanwhile is lost.
	ResyncAll bool                   `json:"resyncAll,omitempty"`
	Models    map[string]*modelState `json:"models"`
}

// modelState is one model's remembered state.
type modelState struct {
	Name string `json:"name"`
	// File and Dir are the manifest and the model directory in the repo.
	File string `json:"file"`
	Dir  string `json:"dir"`
	// Settings identify the serving settings the desired version was built
	// with; a change rebuilds even when the files did not change.
	Settings string `json:"settings"`
	// Desired is the version built from the last good manifest.
	Desired string `json:"desired,omitempty"`
	// SHA is the commit the desired version was built from.
	SHA string `json:"sha,omitempty"`
	// Versions are the builds the rollout refers to (stable, candidate,
	// previous, desired).
	Versions map[string]serving.Version `json:"versions"`
	// Previews are pull requests' versions mirrored beside production, by
	// pull request number.
	Previews map[int]Preview  `json:"previews,omitempty"`
	Rollout  manifest.Rollout `json:"rollout"`
	// Preview is production's preview policy for the model, from the last
	// good manifest of the branch: a pull request never sets its own.
	// Read it with previewPolicy (state saved before it existed has none).
	Preview manifest.Preview `json:"preview"`
	State   rollout.State    `json:"state"`
	// Error is the last problem with the model: a manifest error
	// (path:line:col), a build failure, a target failure; Reason says which.
	Error  string         `json:"error,omitempty"`
	Reason serving.Reason `json:"reason,omitempty"`
	// BuildPending is set from the moment a build of the model is decided
	// until its result is taken, so that a build interrupted by a restart
	// is started again.
	BuildPending bool `json:"buildPending,omitempty"`
	// Resync is set while the model's manifest or source is broken, or
	// after its build failed: files changed meanwhile are not in the next
	// diff, so the next good revision rebuilds it whatever changed.
	Resync bool `json:"resync,omitempty"`
	// Held is set while the model's manifest is broken: the model keeps
	// serving what it served and is not pruned.
	Held bool `json:"held,omitempty"`
	// Events are the most recent rollout events, newest last.
	Events []rollout.TimedEvent `json:"events,omitempty"`

	// applied is the last deployment the target accepted; appliedAt when.
	applied   *serving.Deployment
	appliedAt time.Time
	// command waits for the next rollout step.
	command rollout.Command
	// building is the generation of the build in flight (0 when none); a
	// result of an older generation is stale and dropped.
	building int
	// conds are the model's conditions as last published.
	conds []serving.Condition
	// remote is the manifest of a model fetched from outside the
	// repository, resolved again every SourceInterval.
	remote *manifest.Model
}

// previewPolicy is production's preview policy for the model. A zero
// policy (a state saved before policies were kept; a valid manifest's
// mirrorPercent is at least 1) means the defaults.
func (m *modelState) previewPolicy() manifest.Preview {
	if m.Preview.MirrorPercent == 0 {
		return manifest.Preview{Enabled: true, MirrorPercent: manifest.DefaultMirrorPercent}
	}
	return m.Preview
}

// setError records a problem with the model and the part that failed.
func (m *modelState) setError(reason serving.Reason, msg string) {
	m.Error, m.Reason = msg, reason
}

const maxEvents = 20

func (m *modelState) record(now time.Time, events []rollout.Event) {
	for _, e := range events {
		m.Events = append(m.Events, rollout.TimedEvent{At: now, Event: e})
	}
	if n := len(m.Events) - maxEvents; n > 0 {
		m.Events = append([]rollout.TimedEvent(nil), m.Events[n:]...)
	}
}

// StateStore keeps a reconciler's state between runs as an opaque blob.
// The default is a file under Config.StateDir; on Kubernetes the daemon
// passes a ConfigMap-backed store (serving/kube.StateStore) so that a
// daemon restarted elsewhere resumes.
type StateStore interface {
	// Load returns the saved blob, or nil when nothing was saved yet.
	Load(ctx context.Context) ([]byte, error)
	// Save replaces the saved blob.
	Save(ctx context.Context, data []byte) error
}

// FileStore keeps the state, a JSON document, in one file replaced
// atomically, and a copy of it beside (Path + LastGoodSuffix). A file found
// empty or not JSON (truncated by a full disk, a filesystem that lost the
// end of a write, a hand edit) is never taken for "no state", which would
// deploy the head at once and forget every paused or rolled-back rollout:
// the copy is used, with a warning, and without a usable copy Load fails
// naming the file. Only a missing file means that nothing was saved yet.
type FileStore struct {
	Path string
	// Logger receives the warning when the copy replaces a corrupt file;
	// slog.Default() when nil.
	Logger *slog.Logger
}

// LastGoodSuffix names the copy a FileStore keeps beside its file.
const LastGoodSuffix = ".last-good"

// Load implements StateStore.
func (f FileStore) Load(context.Context) ([]byte, error) {
	data, err := readStateFile(f.Path)
	if err == nil {
		return data, nil
	}
	copyPath := f.Path + LastGoodSuffix
	good, cerr := readStateFile(copyPath)
	if cerr == nil && good == nil {
		cerr = fmt.Errorf("%s does not exist", copyPath)
	}
	if cerr != nil {
		return nil, fmt.Errorf("%w; no usable copy (%w): move %s aside to start again from no state (the head of the branch deploys at once)", err, cerr, f.Path)
	}
	cmp.Or(f.Logger, slog.Default()).Warn("state file is corrupt; using its last good copy", "file", f.Path, "copy", copyPath, "err", err)
	return good, nil
}

// readStateFile reads a state file: nil when it does not exist, an error
// naming it when it is empty or not JSON.
func readStateFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("state file %s is empty (%d bytes)", path, len(data))
	}
	if err := json.Unmarshal(data, new(json.RawMessage)); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (%d bytes, truncated?): %w", path, len(data), err)
	}
	return data, nil
}

// Save implements StateStore: the file, then its copy. An unchanged state
// is not written again (the reconciler saves every second).
func (f FileStore) Save(_ context.Context, data []byte) error {
	copyPath := f.Path + LastGoodSuffix
	if same(f.Path, data) && same(copyPath, data) {
		return nil
	}
	// Only the file's own directory is created, in a state directory that
	// exists: a state directory inside a repository that was moved away
	// (merlin up's default, <repo>/.git/merlin) must not come back as a
	// skeleton at the old path, into which moving the repository back
	// would nest it.
	if err := os.Mkdir(filepath.Dir(f.Path), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("save state: %w", err)
	}
	if err := atomicfile.Write(f.Path, data, 0o644); err != nil {
		return fmt.Errorf("save state file %s: %w", f.Path, err)
	}
	if err := atomicfile.Write(copyPath, data, 0o644); err != nil {
		return fmt.Errorf("save state file %s: %w", copyPath, err)
	}
	return nil
}

// String names the file, for errors about its content.
func (f FileStore) String() string { return f.Path }

func same(path string, data []byte) bool {
	cur, err := os.ReadFile(path)
	return err == nil && bytes.Equal(cur, data)
}

func loadState(ctx context.Context, store StateStore) (*repoState, error) {
	st := &repoState{Models: map[string]*modelState{}}
	data, err := store.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	if len(data) == 0 {
		return st, nil
	}
	if err := json.Unmarshal(data, st); err != nil {
		if name, ok := store.(fmt.Stringer); ok {
			return nil, fmt.Errorf("load state from %s: %w", name, err)
		}
		return nil, fmt.Errorf("load state: %w", err)
	}
	if st.Models == nil {
		st.Models = map[string]*modelState{}
	}
	return st, nil
}

func saveState(ctx context.Context, store StateStore, st *repoState) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return store.Save(ctx, data)
}

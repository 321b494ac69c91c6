package reconciler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/fstest"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// registry is a fake MLflow registry for the Fetcher: what each alias
// points at and the files of each version.
type registry struct {
	mu      sync.Mutex
	aliases map[string]string // alias → version
	files   map[string]string // version → weights
	fail    error
	fetches int
}

func (g *registry) Fetch(_ context.Context, m *manifest.Model) (Fetched, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fetches++
	if g.fail != nil {
		return Fetched{}, g.fail
	}
	ref := m.Spec.Source.MLflow
	alias := ref[len("models:/iris@"):]
	v, ok := g.aliases[alias]
	if !ok {
		return Fetched{}, fmt.Errorf("resolve %s: alias %q not found", ref, alias)
	}
	return Fetched{
		FS:      fstest.MapFS{"MLmodel": {Data: []byte("flavors:\n  sklearn: {}\n")}, "model.pkl": {Data: []byte(g.files[v])}},
		Lineage: map[string]string{"merlin.dev/mlflow-model-version": "iris/" + v},
	}, nil
}

func mlflowModel(alias string) map[string]string {
	return map[string]string{"iris/merlin.yaml": fmt.Sprintf(`apiVersion: merlin.dev/v1
kind: Model
metadata:
  name: iris
spec:
  type: sklearn
  source:
    mlflow: models:/iris@%s
  rollout:
    strategy: direct
`, alias)}
}

// TestRemoteSourceAliasFlip: a model from an MLflow alias deploys what the
// alias names; moving the alias deploys the new version without a commit,
// moving it back gives the first version's id again, and a reference
// that cannot be resolved holds the model at its last good version with
// a source error, until it resolves again.
func TestRemoteSourceAliasFlip(t *testing.T) {
	g := &registry{aliases: map[string]string{"prod": "1"}, files: map[string]string{"1": "weights v1", "2": "weights v2"}}
	f := newFixture(t, servingtest.NewMemory(), nil, "models")
	f.rec.cfg.Fetcher = g
	ctx := t.Context()
	f.push(mlflowModel("prod"))
	v1 := f.model("iris").Desired
	if v1 == "" || f.served("iris")[v1] != 100 {
		t.Fatalf("after the first revision: desired %q, served %v", v1, f.served("iris"))
	}
	if got := f.rec.state.Models["iris"].Versions[v1].Annotations["merlin.dev/mlflow-model-version"]; got != "iris/1" {
		t.Errorf("lineage annotation %q, want iris/1", got)
	}

	refresh := func() {
		t.Helper()
		f.rec.refreshRemote(ctx)
		f.drainBuilds()
		f.rec.stepAll(ctx)
		f.rec.publish()
	}
	g.mu.Lock()
	g.aliases["prod"] = "2"
	g.mu.Unlock()
	refresh()
	v2 := f.model("iris").Desired
	if v2 == v1 || f.served("iris")[v2] != 100 {
		t.Fatalf("after the alias moved: desired %q (was %q), served %v", v2, v1, f.served("iris"))
	}

	g.mu.Lock()
	g.aliases["prod"] = "1"
	g.mu.Unlock()
	refresh()
	if back := f.model("iris").Desired; back != v1 {
		t.Errorf("alias moved back: version %q, want the first one's id %q", back, v1)
	}

	g.mu.Lock()
	g.fail = errors.New(`resolve models:/iris@prod: 403 PERMISSION_DENIED`)
	g.mu.Unlock()
	refresh()
	ms := f.model("iris")
	if ms.Desired != v1 || f.served("iris")[v1] != 100 || !sourceErrorIn(ms) || !ms.Held {
		t.Errorf("a failing reference: desired %q, served %v, error %q, held %v; want %s serving, held with a source error", ms.Desired, f.served("iris"), ms.LastError, ms.Held, v1)
	}
	g.mu.Lock()
	g.fail = nil
	g.mu.Unlock()
	refresh()
	if ms := f.model("iris"); sourceErrorIn(ms) || ms.Held || ms.LastError != "" {
		t.Errorf("the reference resolves again: held %v, error %q; want none", ms.Held, ms.LastError)
	}
}

// TestRemoteSourceWithoutFetcher: an MLflow model with no tracking server
// configured is an error of that model only, naming what to set.
func TestRemoteSourceWithoutFetcher(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), nil, "models")
	changes := mlflowModel("prod")
	for k, v := range files("wine", "direct", "w1") {
		changes[k] = v
	}
	f.push(changes)
	if ms := f.model("iris"); !sourceErrorIn(ms) || ms.LastError == "" {
		t.Errorf("iris: error %q, conditions %+v; want a source error", ms.LastError, ms.Conditions)
	}
	if ms := f.model("wine"); ms.Desired == "" || ms.LastError != "" {
		t.Errorf("wine: %+v; want it deployed", ms)
	}
}

// sourceErrorIn reports whether a model's conditions blame its source.
func sourceErrorIn(ms serving.ModelStatus) bool {
	for _, c := range ms.Conditions {
		if c.Reason == serving.ReasonSource {
			return true
		}
	}
	return false
}

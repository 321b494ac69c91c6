package builder

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"merlin.dev/merlin/manifest"
)

const mlmodelSklearn = "flavors:\n  python_function: {loader_module: mlflow.sklearn}\n  sklearn: {pickled_model: model.pkl}\n"

func model(t *testing.T, yaml string) *manifest.Model {
	t.Helper()
	f := manifest.Parse("models/m/merlin.yaml", []byte(yaml))
	if len(f.Errors) > 0 || len(f.Models) != 1 || len(f.Models[0].Errors) > 0 {
		t.Fatalf("bad test manifest: %v %v", f.Errors, f.Models)
	}
	return f.Models[0]
}

const sklearnYAML = `apiVersion: merlin.dev/v1
kind: Model
metadata: {name: m}
spec:
  type: sklearn
  source: {path: ./model}
`

func files(extra map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{
		"models/m/merlin.yaml":     {Data: []byte(sklearnYAML)},
		"models/m/model/MLmodel":   {Data: []byte(mlmodelSklearn)},
		"models/m/model/model.pkl": {Data: []byte("pickle")},
	}
	for k, v := range extra {
		fsys[k] = &fstest.MapFile{Data: []byte(v)}
	}
	return fsys
}

func TestBuildIsContentAddressed(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := model(t, sklearnYAML)
	first, err := b.Build(files(nil), "models/m/model", m)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Digest) != 64 || !strings.Contains(strings.Join(first.Flavors, ","), "sklearn") {
		t.Fatalf("result %+v", first)
	}
	if data, err := os.ReadFile(filepath.Join(first.Bundle, "model.pkl")); err != nil || string(data) != "pickle" {
		t.Fatalf("bundle model.pkl = %q, %v", data, err)
	}
	// Readable to a model server of another user, writable only by the
	// daemon.
	for _, f := range []string{first.Bundle, filepath.Join(first.Bundle, "model.pkl")} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm()&0o755 != st.Mode().Perm() || st.Mode().Perm()&0o444 != 0o444 {
			t.Errorf("%s: %v, %v; want readable to all, writable by the owner only", f, st.Mode(), err)
		}
	}
	again, err := b.Build(files(nil), "models/m/model", m)
	if err != nil || again.Digest != first.Digest || again.Bundle != first.Bundle {
		t.Fatalf("same files built to %+v, first %+v (%v)", again, first, err)
	}

	cases := []struct {
		name string
		fsys fstest.MapFS
		yaml string
	}{
		{"a changed model file", files(map[string]string{"models/m/model/model.pkl": "pickle2"}), sklearnYAML},
		{"an added file", files(map[string]string{"models/m/model/extra.txt": "x"}), sklearnYAML},
		{"a renamed file", func() fstest.MapFS {
			f := files(map[string]string{"models/m/model/model2.pkl": "pickle"})
			delete(f, "models/m/model/model.pkl")
			return f
		}(), sklearnYAML},
		{"another protocol", files(nil), sklearnYAML + "  protocol: v2\n"},
		{"other env", files(nil), sklearnYAML + "  env: [{name: A, value: b}]\n"},
	}
	for _, c := range cases {
		r, err := b.Build(c.fsys, "models/m/model", model(t, c.yaml))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.Digest == first.Digest {
			t.Errorf("%s: digest unchanged", c.name)
		}
	}
	// Settings that do not change what the server does keep the version.
	r, err := b.Build(files(nil), "models/m/model", model(t, sklearnYAML+"  replicas: {min: 0, max: 3}\n  rollout: {strategy: direct}\n"))
	if err != nil || r.Digest != first.Digest {
		t.Errorf("replicas/rollout changed the digest: %v", err)
	}
}

func TestBuildErrorsArePositioned(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		fsys fstest.MapFS
		yaml string
		want string
	}{
		{"no MLmodel", func() fstest.MapFS { f := files(nil); delete(f, "models/m/model/MLmodel"); return f }(), sklearnYAML, "no MLmodel file"},
		{"flavor mismatch", files(nil), strings.Replace(sklearnYAML, "sklearn", "xgboost", 1), "xgboost"},
		{"missing directory", fstest.MapFS{"models/m/merlin.yaml": {Data: []byte(sklearnYAML)}}, sklearnYAML, "models/m/model"},
	}
	for _, c := range cases {
		_, err := b.Build(c.fsys, "models/m/model", model(t, c.yaml))
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		// Positioned at spec.source.path: line 6, column 19 of the manifest.
		if !strings.HasPrefix(err.Error(), "models/m/merlin.yaml:6:") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want models/m/merlin.yaml:6:…%s", c.name, err, c.want)
		}
	}
}

func TestPruneKeepsListedBundles(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keep, err := b.Build(files(nil), "models/m/model", model(t, sklearnYAML))
	if err != nil {
		t.Fatal(err)
	}
	drop, err := b.Build(files(map[string]string{"models/m/model/model.pkl": "old"}), "models/m/model", model(t, sklearnYAML))
	if err != nil {
		t.Fatal(err)
	}
	// A build cut off long ago left its temporary directory; a fresh one
	// may belong to a build in progress.
	stale, fresh := filepath.Join(b.dir, ".build-stale"), filepath.Join(b.dir, ".build-fresh")
	for _, d := range []string{stale, fresh} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	st, err := b.Prune(t.Context(), map[string]bool{keep.Digest: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Bundle(keep.Digest); !ok {
		t.Error("kept bundle was removed")
	}
	if _, ok := b.Bundle(drop.Digest); ok {
		t.Error("unlisted bundle survived")
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("abandoned build directory survived")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("a build directory in use was removed")
	}
	if st.Kept != 1 || st.Removed != 1 || st.TempsRemoved != 1 || st.BytesAfter >= st.BytesBefore {
		t.Errorf("stats %+v: want 1 kept, 1 removed, 1 temp removed, fewer bytes after", st)
	}
}

// TestPruneBoundsBundlesOver200Commits builds 200 successive versions of a
// model, pruning after each as the reconciler does (keeping the current
// and the previous version), and compares the directory with one that is
// never pruned.
func TestPruneBoundsBundlesOver200Commits(t *testing.T) {
	pruned, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	unpruned, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := model(t, sklearnYAML)
	var prev string
	var st PruneStats
	for i := range 200 {
		fsys := files(map[string]string{"models/m/model/model.pkl": fmt.Sprintf("%0256d", i)})
		res, err := pruned.Build(fsys, "models/m/model", m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unpruned.Build(fsys, "models/m/model", m); err != nil {
			t.Fatal(err)
		}
		if st, err = pruned.Prune(t.Context(), map[string]bool{res.Digest: true, prev: true}); err != nil {
			t.Fatal(err)
		}
		prev = res.Digest
	}
	all, err := unpruned.Prune(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after 200 builds: pruned %d bundles, %d bytes; unpruned %d bundles, %d bytes", st.Kept, st.BytesAfter, all.Removed, all.BytesBefore)
	if st.Kept != 2 || all.Removed != 200 {
		t.Errorf("pruned keeps %d bundles (want 2), unpruned holds %d (want 200)", st.Kept, all.Removed)
	}
}

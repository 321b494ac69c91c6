package reconciler

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving/servingtest"
)

func (b *countingBuilder) Prune(ctx context.Context, keep map[string]bool) (builder.PruneStats, error) {
	return b.real.Prune(ctx, keep)
}

func loadModel(t *testing.T, tree fs.FS, name string) *manifest.Model {
	t.Helper()
	files, err := manifest.Load(tree, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		for _, m := range f.Models {
			if m.Metadata.Name == name {
				return m
			}
		}
	}
	t.Fatalf("no model %s", name)
	return nil
}

// dirSize returns the bytes and entries directly under dir.
func dirSize(t *testing.T, dir string) (bytes int64, entries int) {
	t.Helper()
	list, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			bytes += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return bytes, len(list)
}

// TestBundlesStayBounded makes 200 commits of a changing model (a canary
// rolled forward by hand, so stable, candidate and previous all exist at
// times) and checks that the bundle directory holds only what versions
// still refer to, beside what it would hold without pruning.
func TestBundlesStayBounded(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
	unprunedDir := t.TempDir()
	unpruned, err := builder.New(unprunedDir)
	if err != nil {
		t.Fatal(err)
	}
	weights := func(i int) string { return fmt.Sprintf("%0256d", i) } // a 256-byte model file
	f.push(merge(files("iris", "blueGreen", weights(0), "    interval: 1h"), files("wine", "direct", "stays")))
	for i := 1; i < 200; i++ {
		f.push(map[string]string{"iris/model/model.pkl": weights(i)})
		if i%2 == 0 {
			// On this goroutine, as the loop would take it: pushes
			// reconcile here too.
			if res := f.rec.command(t.Context(), commandReq{model: "iris", cmd: "promote"}); res.Error != "" {
				t.Fatalf("commit %d: promote: %s", i, res.Error)
			}
		}
		tree, _ := f.repo.Tree(f.repo.head)
		if _, err := unpruned.Build(tree, "iris/model", loadModel(t, tree, "iris")); err != nil {
			t.Fatal(err)
		}
	}
	referenced := map[string]bool{}
	for _, ms := range f.rec.state.Models {
		for _, v := range ms.Versions {
			referenced[v.Digest] = true
		}
	}
	size, n := dirSize(t, f.bundles)
	usize, un := dirSize(t, unprunedDir)
	t.Logf("after 200 commits: %d bundles, %d bytes kept (versions referenced: %d); without pruning: %d bundles, %d bytes", n, size, len(referenced), un, usize)
	if n > len(referenced) {
		t.Errorf("%d bundles left, but only %d versions are referenced", n, len(referenced))
	}
	if n < 2 || len(referenced) > 4 {
		t.Errorf("%d bundles, %d referenced: want the wine model's and iris's current versions", n, len(referenced))
	}
}

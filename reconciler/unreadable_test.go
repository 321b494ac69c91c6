package reconciler

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"merlin.dev/merlin/gitsource"
	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// checkHeldByFile checks that model keeps serving was, is held, and shows
// an error naming file.
func checkHeldByFile(t *testing.T, f *fixture, model, was, file, want string) {
	t.Helper()
	m := f.model(model)
	c, _ := serving.Find(m.Conditions, serving.Degraded)
	if !m.Held || c.Status != serving.True || c.Reason != serving.ReasonManifest || !strings.HasPrefix(c.Message, file+":1:1: ") ||
		!strings.Contains(c.Message, want) {
		t.Errorf("%s: held %v, degraded %+v; want held with %s:1:1: …%s…", model, m.Held, c, file, want)
	}
	if f.served(model)[was] != 100 {
		t.Errorf("%s stopped serving its last good version %s: %v", model, was, f.served(model))
	}
	if msg := f.rec.Status().FileErrors[file]; !strings.Contains(msg, want) {
		t.Errorf("status file error of %s: %q", file, msg)
	}
}

// TestUnreadableManifest: a merlin.yaml that cannot be read holds the
// models it declared (they keep serving and show the file's error); the
// other models reconcile, and the repository has no error (issue 11,
// item 5).
func TestUnreadableManifest(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
	f.push(merge(files("iris", "direct", "w1"), files("wine", "direct", "w1"), files("rf", "direct", "w1")))
	iris, wine, rf := f.model("iris").Desired, f.model("wine").Desired, f.model("rf").Desired
	f.push(map[string]string{
		"iris/merlin.yaml":   "-> gone.yaml",
		"wine/merlin.yaml":   "-> ../../outside/merlin.yaml",
		"rf/model/model.pkl": "w2",
	})
	if st := f.rec.Status(); st.Error != "" {
		t.Fatalf("repository error %q; want errors of the two files only", st.Error)
	}
	checkHeldByFile(t, f, "iris", iris, "iris/merlin.yaml", `symlink to "gone.yaml": the target does not exist`)
	checkHeldByFile(t, f, "wine", wine, "wine/merlin.yaml", "points outside the repository")
	if m := f.model("rf"); m.Desired == rf || f.served("rf")[m.Desired] != 100 {
		t.Errorf("rf did not deploy its new weights: desired %s (was %s), served %v", m.Desired, rf, f.served("rf"))
	}
}

// TestUnreadableManifestRealGit is TestUnreadableManifest through go-git:
// symlinks committed with the git CLI, one dangling and one leaving the
// repository, read by gitsource.
func TestUnreadableManifestRealGit(t *testing.T) {
	g := gittest.NewRepo(t)
	g.Commit("four models", merge(files("iris", "direct", "w1"), files("wine", "direct", "w1"), files("svm", "direct", "w1"), files("rf", "direct", "w1")))
	src, err := gitsource.New(gitsource.Config{Name: "models", URL: g.Bare, Branch: gittest.Branch, CacheDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureFrom(t, servingtest.NewMemory(), NewClaims(), "models", src, nil)
	prev := ""
	fetch := func() {
		t.Helper()
		rev, err := src.Fetch(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		changed, full, err := src.ChangedFull(t.Context(), prev, rev.SHA)
		if err != nil {
			t.Fatal(err)
		}
		f.deliver(gitsource.Event{Revision: rev, Previous: prev, Changed: changed, Full: full})
		prev = rev.SHA
	}
	fetch()
	iris, wine, svm, rf := f.model("iris").Desired, f.model("wine").Desired, f.model("svm").Desired, f.model("rf").Desired
	if iris == "" || wine == "" || svm == "" || rf == "" {
		t.Fatalf("first revision: %+v", f.rec.Status())
	}
	outside := filepath.Join(t.TempDir(), "merlin.yaml")
	if err := os.WriteFile(outside, []byte(model("wine", "direct")), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{"iris/merlin.yaml": "gone.yaml", "wine/merlin.yaml": outside, "svm/merlin.yaml": "../../outside/merlin.yaml"}
	for link, target := range links {
		p := filepath.Join(g.Work, link)
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	g.Commit("break three manifests, change rf", map[string]string{"rf/model/model.pkl": "w2"})
	fetch()
	if st := f.rec.Status(); st.Error != "" {
		t.Fatalf("repository error %q; want errors of the two files only", st.Error)
	}
	checkHeldByFile(t, f, "iris", iris, "iris/merlin.yaml", `symlink to "gone.yaml": the target does not exist`)
	checkHeldByFile(t, f, "wine", wine, "wine/merlin.yaml", fmt.Sprintf("symlink to %q points outside the repository", outside))
	checkHeldByFile(t, f, "svm", svm, "svm/merlin.yaml", `symlink to "../../outside/merlin.yaml" points outside the repository`)
	if m := f.model("rf"); m.Desired == rf || f.served("rf")[m.Desired] != 100 {
		t.Errorf("rf did not deploy its new weights: desired %s (was %s), served %v", m.Desired, rf, f.served("rf"))
	}
}

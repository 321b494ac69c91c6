package reconciler

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/gitsource"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// previewPR runs PreviewRevision for pull request pr at a head made of
// changes on top of production's head.
func (f *fixture) previewPR(ctx context.Context, pr int, changes map[string]string) []PreviewResult {
	f.t.Helper()
	rs, err := f.rec.PreviewRevision(ctx, pr, f.repo.branch(changes))
	if err != nil {
		f.t.Fatalf("preview of #%d: %v", pr, err)
	}
	return rs
}

func result(t *testing.T, rs []PreviewResult, model string) PreviewResult {
	t.Helper()
	for _, r := range rs {
		if r.Model == model {
			return r
		}
	}
	t.Fatalf("no result for %q in %+v", model, rs)
	return PreviewResult{}
}

// mirrors returns the mirrors the target was asked for model.
func (f *fixture) mirrors(model string) []serving.Mirror {
	d, _ := f.mem.Desired(model)
	return d.Mirrors
}

// TestPreviewRevision: a pull request that changes one model's files and
// leaves another alone previews the first beside production, mirrored at
// production's percent with no client traffic, and not the second.
func TestPreviewRevision(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
	f.push(merge(files("iris", "direct", "w1", "  preview:", "    mirrorPercent: 25"), files("wine", "direct", "w1")))
	ctx := commandCtx(t, f)
	stable := f.model("iris").Desired
	rs := f.previewPR(ctx, 7, map[string]string{"iris/model/model.pkl": "w2"})
	if len(rs) != 2 || rs[0].Model != "iris" || rs[1].Model != "wine" {
		t.Fatalf("results %+v, want iris and wine", rs)
	}
	iris, wine := rs[0], rs[1]
	if !iris.Changed || !iris.Previewed || iris.Version == "" || iris.Version == stable || iris.File != "iris/merlin.yaml" || iris.Error != "" {
		t.Fatalf("iris: %+v", iris)
	}
	if wine.Changed || wine.Previewed || wine.Version != f.model("wine").Desired {
		t.Fatalf("wine: %+v", wine)
	}
	d, _ := f.mem.Desired("iris")
	if !slices.Equal(d.Mirrors, []serving.Mirror{{Version: iris.Version, Percent: 25}}) || d.Traffic[iris.Version] != 0 || d.Traffic[stable] != 100 {
		t.Fatalf("iris deployment: mirrors %+v, traffic %v", d.Mirrors, d.Traffic)
	}
	if m := f.mirrors("wine"); len(m) != 0 {
		t.Fatalf("wine mirrors %+v", m)
	}
	if got := f.rec.PRModels(7); !slices.Equal(got, []string{"iris"}) {
		t.Fatalf("PRModels(7) = %v", got)
	}
	v := f.model("iris").Versions
	if last := v[len(v)-1]; last.Role != serving.RolePreview || last.PR != 7 || last.Version != iris.Version {
		t.Fatalf("iris status versions %+v", v)
	}
}

// TestPreviewPolicyFromProduction: whether a model is previewed, and how
// much is mirrored to it, is production's merlin.yaml's say, whatever the
// pull request's says.
func TestPreviewPolicyFromProduction(t *testing.T) {
	pr := map[string]string{
		"iris/merlin.yaml":     model("iris", "direct", "  preview:", "    enabled: true", "    mirrorPercent: 100"),
		"iris/model/model.pkl": "w2",
	}
	t.Run("disabled", func(t *testing.T) {
		f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
		f.push(files("iris", "direct", "w1", "  preview:", "    enabled: false"))
		r := result(t, f.previewPR(commandCtx(t, f), 7, pr), "iris")
		if !r.Changed || r.Previewed || r.Note != noteDisabled {
			t.Fatalf("iris: %+v", r)
		}
		if m := f.mirrors("iris"); len(m) != 0 {
			t.Fatalf("mirrors %+v, want none", m)
		}
	})
	t.Run("mirror percent", func(t *testing.T) {
		f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
		f.push(files("iris", "direct", "w1", "  preview:", "    mirrorPercent: 10"))
		r := result(t, f.previewPR(commandCtx(t, f), 7, pr), "iris")
		if m := f.mirrors("iris"); !r.Previewed || !slices.Equal(m, []serving.Mirror{{Version: r.Version, Percent: 10}}) {
			t.Fatalf("iris %+v, mirrors %+v, want 10%%", r, m)
		}
	})
}

// TestPreviewManifestError: a pull request that breaks a manifest gets a
// positioned error and no preview; production does not notice.
func TestPreviewManifestError(t *testing.T) {
	positioned := regexp.MustCompile(`^iris/merlin\.yaml:\d+:\d+: `)
	for _, tc := range []struct {
		name, manifest, model string
	}{
		{"invalid field", model("iris", "direct", "  replica: 2"), "iris"},
		{"syntax error", "metadata: [unclosed\n", ""}, // no model can be named
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
			f.push(files("iris", "direct", "w1"))
			prod := f.model("iris")
			applies := f.mem.Applies("iris")
			rs := f.previewPR(commandCtx(t, f), 7, map[string]string{"iris/merlin.yaml": tc.manifest, "iris/model/model.pkl": "w2"})
			r := result(t, rs, tc.model)
			if !positioned.MatchString(r.Error) || r.Reason != serving.ReasonManifest || !r.Changed || r.Previewed || r.Version != "" || r.File != "iris/merlin.yaml" {
				t.Fatalf("result %+v", r)
			}
			m := f.model("iris")
			if m.Desired != prod.Desired || m.Held || m.LastError != "" || f.mem.Applies("iris") != applies || len(f.rec.state.Models["iris"].Previews) != 0 {
				t.Fatalf("production changed: %+v, %d applies", m, f.mem.Applies("iris"))
			}
		})
	}
}

// TestPreviewRevertRemoves: a pull request's next head replaces its
// previews: once it reverts the change, the preview is gone.
func TestPreviewRevertRemoves(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
	f.push(files("iris", "direct", "w1"))
	ctx := commandCtx(t, f)
	if r := result(t, f.previewPR(ctx, 7, map[string]string{"iris/model/model.pkl": "w2"}), "iris"); !r.Previewed || len(f.mirrors("iris")) != 1 {
		t.Fatalf("first head: %+v, mirrors %+v", r, f.mirrors("iris"))
	}
	r := result(t, f.previewPR(ctx, 7, map[string]string{"iris/model/model.pkl": "w1"}), "iris")
	if r.Changed || r.Previewed || len(f.mirrors("iris")) != 0 || len(f.rec.PRModels(7)) != 0 {
		t.Fatalf("reverted head: %+v, mirrors %+v, PRModels %v", r, f.mirrors("iris"), f.rec.PRModels(7))
	}
}

// TestPreviewNewModel: a model only the pull request declares deploys when
// merged, not before.
func TestPreviewNewModel(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
	f.push(files("iris", "direct", "w1"))
	r := result(t, f.previewPR(commandCtx(t, f), 7, files("beta", "direct", "w1")), "beta")
	if !r.Changed || r.Previewed || r.Note != noteNewModel || r.Version == "" {
		t.Fatalf("beta: %+v", r)
	}
	if _, ok := f.mem.Desired("beta"); ok || f.model("beta").Name != "" {
		t.Fatal("a model only in the pull request was deployed")
	}
	if f.claims.Owner("beta") != "" {
		t.Fatal("the pull request claimed the name of its new model")
	}
}

// TestPreviewTwoPRs: two pull requests preview one model at once; closing
// one keeps the other's.
func TestPreviewTwoPRs(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
	f.push(files("iris", "direct", "w1", "  preview:", "    mirrorPercent: 30"))
	ctx := commandCtx(t, f)
	a := result(t, f.previewPR(ctx, 7, map[string]string{"iris/model/model.pkl": "w2"}), "iris")
	b := result(t, f.previewPR(ctx, 8, map[string]string{"iris/model/model.pkl": "w3"}), "iris")
	want := []serving.Mirror{{Version: a.Version, Percent: 30}, {Version: b.Version, Percent: 30}}
	if !a.Previewed || !b.Previewed || !slices.Equal(f.mirrors("iris"), want) {
		t.Fatalf("#7 %+v, #8 %+v, mirrors %+v", a, b, f.mirrors("iris"))
	}
	if err := f.rec.RemovePreviews(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if m := f.mirrors("iris"); !slices.Equal(m, want[1:]) {
		t.Fatalf("after closing #7: mirrors %+v", m)
	}
}

// gatedBuilder holds the builds of model files whose content is hold until
// gate closes, and says on started when one waits.
type gatedBuilder struct {
	Builder
	hold    string
	gate    chan struct{}
	started chan struct{}
}

func (b *gatedBuilder) Build(fsys fs.FS, dir string, m *manifest.Model) (builder.Result, error) {
	if data, _ := fs.ReadFile(fsys, dir+"/model.pkl"); string(data) == b.hold {
		b.started <- struct{}{}
		<-b.gate
	}
	return b.Builder.Build(fsys, dir, m)
}

func gate(f *fixture, hold string) *gatedBuilder {
	g := &gatedBuilder{Builder: f.rec.builder, hold: hold, gate: make(chan struct{}), started: make(chan struct{}, 1)}
	f.rec.builder = g
	return g
}

// TestPreviewBuildDoesNotBlockLoop: while a pull request's build is slow,
// the reconciler's loop goes on: commands, production's revisions. The
// preview lands when the build does, and is saved with the state.
func TestPreviewBuildDoesNotBlockLoop(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
	f.push(merge(files("iris", "direct", "w1"), files("wine", "direct", "w1")))
	g := gate(f, "slow")
	ctx, cancel := context.WithCancel(t.Context())
	events, ran := make(chan gitsource.Event), make(chan error, 1)
	go func() { ran <- f.rec.Run(ctx, events) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})

	type outcome struct {
		rs  []PreviewResult
		err error
	}
	done := make(chan outcome, 1)
	sha := f.repo.branch(map[string]string{"iris/model/model.pkl": "slow"})
	go func() {
		rs, err := f.rec.PreviewRevision(ctx, 7, sha)
		done <- outcome{rs, err}
	}()
	<-g.started
	if res, err := f.rec.Command(ctx, "iris", rollout.Pause); err != nil || res.Phase == "" {
		t.Fatalf("pause during a preview build: %+v, %v", res, err)
	}
	eventually(t, "the pause is in the published status", func() bool { return f.model("iris").Paused })
	events <- f.repo.commit(map[string]string{"wine/model/model.pkl": "w2"})
	wine := f.model("wine").Desired
	eventually(t, "production's wine deploys during a preview build", func() bool { return f.model("wine").Desired != wine })
	select {
	case o := <-done:
		t.Fatalf("the preview finished before its build: %+v", o)
	default:
	}
	close(g.gate)
	o := <-done
	if o.err != nil || !result(t, o.rs, "iris").Previewed {
		t.Fatalf("preview: %+v, %v", o.rs, o.err)
	}
	preview := result(t, o.rs, "iris").Version
	eventually(t, "the preview is saved with the state", func() bool {
		data, _ := os.ReadFile(filepath.Join(f.rec.cfg.StateDir, "repos", "models.json"))
		return strings.Contains(string(data), `"pr": 7`) && strings.Contains(string(data), preview)
	})
}

// eventually waits up to 10s for cond, failing with what otherwise.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
	}
}

// TestPreviewLaterWins: of two previews of one pull request, the later
// one's set stands even when the earlier one's build finishes last; so
// does a removal.
func TestPreviewLaterWins(t *testing.T) {
	for _, tc := range []struct {
		name  string
		later func(ctx context.Context, f *fixture) []serving.Mirror // the mirrors it leaves
	}{
		{"later head", func(ctx context.Context, f *fixture) []serving.Mirror {
			r := result(f.t, f.previewPR(ctx, 7, map[string]string{"iris/model/model.pkl": "w3"}), "iris")
			return []serving.Mirror{{Version: r.Version, Percent: manifest.DefaultMirrorPercent}}
		}},
		{"closed", func(ctx context.Context, f *fixture) []serving.Mirror {
			if err := f.rec.RemovePreviews(ctx, 7); err != nil {
				f.t.Fatal(err)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
			f.push(files("iris", "direct", "w1"))
			g := gate(f, "slow")
			ctx := commandCtx(t, f)
			sha := f.repo.branch(map[string]string{"iris/model/model.pkl": "slow"})
			errc := make(chan error, 1)
			go func() {
				_, err := f.rec.PreviewRevision(ctx, 7, sha)
				errc <- err
			}()
			<-g.started
			want := tc.later(ctx, f)
			close(g.gate)
			if err := <-errc; !errors.Is(err, ErrSuperseded) {
				t.Fatalf("the earlier preview: %v, want ErrSuperseded", err)
			}
			if m := f.mirrors("iris"); !slices.Equal(m, want) {
				t.Fatalf("mirrors %+v, want %+v", m, want)
			}
		})
	}
}

// TestPreviewPolicyDefaults: state saved before production's preview
// policy was kept previews at the defaults.
func TestPreviewPolicyDefaults(t *testing.T) {
	if p := (&modelState{}).previewPolicy(); p != (manifest.Preview{Enabled: true, MirrorPercent: manifest.DefaultMirrorPercent}) {
		t.Fatalf("zero policy → %+v", p)
	}
	if p := (&modelState{Preview: manifest.Preview{MirrorPercent: 5}}).previewPolicy(); p.Enabled {
		t.Fatalf("a disabled policy → %+v", p)
	}
}

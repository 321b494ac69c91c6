package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/gitsource"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// repo is a fake git history: trees by SHA, built from the previous one.
type repo struct {
	mu    sync.Mutex
	trees map[string]fstest.MapFS
	head  string
	n     int
	// unreadable are revisions whose tree cannot be read (a store error);
	// while breakNew is set, every new commit is one.
	unreadable map[string]bool
	breakNew   bool
}

func newRepo() *repo {
	return &repo{trees: map[string]fstest.MapFS{}, unreadable: map[string]bool{}}
}

// commit applies changes (path → content, "" deletes) to the head's tree
// and returns the event a poller would deliver.
func (r *repo) commit(changes map[string]string) gitsource.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	sha, changed := r.add(changes)
	ev := gitsource.Event{Revision: gitsource.Revision{SHA: sha}, Previous: r.head, Changed: changed, Full: r.head == ""}
	r.head = sha
	return ev
}

// branch commits changes on top of the head without moving it, as a pull
// request's head, and returns its SHA.
func (r *repo) branch(changes map[string]string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	sha, _ := r.add(changes)
	return sha
}

// add stores the head's tree with changes applied as a new commit.
func (r *repo) add(changes map[string]string) (sha string, changed []string) {
	tree := fstest.MapFS{}
	maps.Copy(tree, r.trees[r.head])
	for p, content := range changes {
		changed = append(changed, p)
		switch target, link := strings.CutPrefix(content, "-> "); {
		case content == "":
			delete(tree, p)
		case link:
			tree[p] = &fstest.MapFile{Data: []byte(target), Mode: fs.ModeSymlink | 0o777}
		default:
			tree[p] = &fstest.MapFile{Data: []byte(content), Mode: 0o644}
		}
	}
	r.n++
	sha = fmt.Sprintf("%040x", r.n)
	r.trees[sha] = tree
	r.unreadable[sha] = r.breakNew
	return sha, changed
}

func (r *repo) Tree(sha string) (fs.FS, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.trees[sha]
	if !ok || r.unreadable[sha] {
		return nil, fmt.Errorf("no commit %s", sha)
	}
	return t, nil
}

// ChangedFull diffs two trees as gitsource does: every path whose content
// or mode differs; every path of to when from is unknown.
func (r *repo) ChangedFull(_ context.Context, from, to string) ([]string, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, okA := r.trees[from]
	b, ok := r.trees[to]
	if !ok {
		return nil, false, fmt.Errorf("no commit %s", to)
	}
	if !okA {
		return slices.Sorted(maps.Keys(b)), true, nil
	}
	var out []string
	for p, fb := range b {
		if fa, ok := a[p]; !ok || string(fa.Data) != string(fb.Data) || fa.Mode != fb.Mode {
			out = append(out, p)
		}
	}
	for p := range a {
		if _, ok := b[p]; !ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, false, nil
}

// countingBuilder counts builds and can hold the builds of one model.
type countingBuilder struct {
	real   *builder.Builder
	builds atomic.Int64
	hold   string        // model whose builds wait for release
	gate   chan struct{} // closed to release them
	fail   atomic.Value  // string: model whose builds fail (a transient error)
}

func (b *countingBuilder) Build(fsys fs.FS, dir string, m *manifest.Model) (builder.Result, error) {
	if b.hold != "" && m.Metadata.Name == b.hold {
		<-b.gate
	}
	if name, _ := b.fail.Load().(string); name != "" && name == m.Metadata.Name {
		return builder.Result{}, errors.New("write bundle: no space left on device")
	}
	b.builds.Add(1)
	return b.real.Build(fsys, dir, m)
}

func model(name, strategy string, extra ...string) string {
	return fmt.Sprintf(`apiVersion: merlin.dev/v1
kind: Model
metadata:
  name: %s
spec:
  type: sklearn
  source:
    path: ./model
  rollout:
    strategy: %s
%s`, name, strategy, strings.Join(extra, "\n"))
}

// files declares model name in directory name/ with a model file whose
// content is weights.
func files(name, strategy, weights string, extra ...string) map[string]string {
	return map[string]string{
		name + "/merlin.yaml":     model(name, strategy, extra...),
		name + "/model/MLmodel":   "flavors:\n  sklearn: {}\n",
		name + "/model/model.pkl": weights,
	}
}

type fixture struct {
	t       *testing.T
	repo    *repo
	mem     *servingtest.Memory
	b       *countingBuilder
	rec     *Reconciler
	claims  *Claims
	bundles string
}

func newFixture(t *testing.T, target serving.Target, claims *Claims, name string) *fixture {
	t.Helper()
	return newFixtureFrom(t, target, claims, name, nil, nil)
}

// newFixtureFrom is newFixture reading src (the fake repo when nil) with
// the search paths given.
func newFixtureFrom(t *testing.T, target serving.Target, claims *Claims, name string, src Source, paths []string) *fixture {
	t.Helper()
	bundles := t.TempDir()
	real, err := builder.New(bundles)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, repo: newRepo(), b: &countingBuilder{real: real}, claims: claims, bundles: bundles}
	if m, ok := target.(*servingtest.Memory); ok {
		f.mem = m
	}
	if src == nil {
		src = f.repo
	}
	f.rec, err = New(t.Context(), Config{Repo: name, StateDir: t.TempDir(), Tick: time.Hour, TargetName: "test", Paths: paths},
		src, target, f.b, nil, claims, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// push delivers a commit and runs the loop until its builds landed.
func (f *fixture) push(changes map[string]string) {
	f.t.Helper()
	f.deliver(f.repo.commit(changes))
}

// deliver reconciles ev and runs the loop until its builds landed.
func (f *fixture) deliver(ev gitsource.Event) {
	f.t.Helper()
	ctx := f.t.Context()
	f.rec.reconcileRevision(ctx, ev)
	f.drainBuilds()
	f.rec.stepAll(ctx)
	f.rec.publish()
}

func (f *fixture) drainBuilds() {
	f.t.Helper()
	for f.building() {
		select {
		case b := <-f.rec.builds:
			f.rec.finishBuild(f.t.Context(), b)
		case <-time.After(10 * time.Second):
			f.t.Fatal("a build did not finish")
		}
	}
}

func (f *fixture) building() bool {
	for _, ms := range f.rec.state.Models {
		if ms.building != 0 {
			return true
		}
	}
	return false
}

func (f *fixture) model(name string) serving.ModelStatus {
	f.t.Helper()
	for _, m := range f.rec.Status().Models {
		if m.Name == name {
			return m
		}
	}
	return serving.ModelStatus{}
}

// served returns the traffic the target routes for model.
func (f *fixture) served(name string) map[string]int {
	st, _ := f.mem.Status(f.t.Context())
	for _, m := range st {
		if m.Name == name {
			out := map[string]int{}
			for _, v := range m.Versions {
				out[v.Version] = v.Weight
			}
			return out
		}
	}
	return nil
}

// TestDecisions is the reconciler's decisions, commit by commit, against
// the in-memory target (which passes the same contract as local and kube).
func TestDecisions(t *testing.T) {
	type step struct {
		changes map[string]string
		check   func(t *testing.T, f *fixture, prev serving.ModelStatus)
	}
	serves := func(name string) func(t *testing.T, f *fixture, _ serving.ModelStatus) {
		return func(t *testing.T, f *fixture, _ serving.ModelStatus) {
			m := f.model(name)
			if m.Desired == "" || f.served(name)[m.Desired] != 100 {
				t.Fatalf("%s: desired %q, served %v", name, m.Desired, f.served(name))
			}
		}
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"new digest deploys", []step{
			{files("iris", "direct", "w1"), serves("iris")},
			{map[string]string{"iris/model/model.pkl": "w2"}, func(t *testing.T, f *fixture, prev serving.ModelStatus) {
				m := f.model("iris")
				if m.Desired == prev.Desired {
					t.Fatalf("new weights kept version %s", m.Desired)
				}
				serves("iris")(t, f, prev)
			}},
		}},
		{"same digest builds nothing", []step{
			{files("iris", "direct", "w1"), serves("iris")},
			{map[string]string{"README.md": "docs"}, func(t *testing.T, f *fixture, prev serving.ModelStatus) {
				if n := f.b.builds.Load(); n != 1 {
					t.Fatalf("%d builds, want 1: an unrelated change rebuilt the model", n)
				}
				if m := f.model("iris"); m.Desired != prev.Desired || f.mem.Applies("iris") != 1 {
					t.Fatalf("desired %s → %s, %d applies", prev.Desired, m.Desired, f.mem.Applies("iris"))
				}
			}},
		}},
		{"broken manifest holds the last good version", []step{
			{files("iris", "direct", "w1"), serves("iris")},
			{map[string]string{"iris/merlin.yaml": model("iris", "direct", "  replica: 2"), "iris/model/model.pkl": "w2"},
				func(t *testing.T, f *fixture, prev serving.ModelStatus) {
					m := f.model("iris")
					c, _ := serving.Find(m.Conditions, serving.Degraded)
					if !m.Held || c.Status != serving.True || c.Reason != serving.ReasonManifest || !strings.HasPrefix(c.Message, "iris/merlin.yaml:") {
						t.Fatalf("held %v, degraded %+v", m.Held, c)
					}
					if f.served("iris")[prev.Desired] != 100 {
						t.Fatalf("the last good version stopped serving: %v", f.served("iris"))
					}
				}},
			{map[string]string{"iris/merlin.yaml": model("iris", "direct")}, func(t *testing.T, f *fixture, prev serving.ModelStatus) {
				m := f.model("iris")
				if m.Held || m.LastError != "" || m.Desired == prev.Desired {
					t.Fatalf("fixed manifest: held %v, error %q, desired %s", m.Held, m.LastError, m.Desired)
				}
				serves("iris")(t, f, prev)
			}},
		}},
		{"removed model is deleted", []step{
			{merge(files("iris", "direct", "w1"), files("wine", "direct", "w1")), serves("wine")},
			{map[string]string{"iris/merlin.yaml": "", "iris/model/MLmodel": "", "iris/model/model.pkl": ""},
				func(t *testing.T, f *fixture, _ serving.ModelStatus) {
					if _, ok := f.mem.Desired("iris"); ok || f.model("iris").Name != "" {
						t.Fatal("a removed model is still deployed")
					}
					if f.claims.Claim("iris", "other") != "other" {
						t.Fatal("the removed model's name is still claimed")
					}
					serves("wine")(t, f, serving.ModelStatus{})
				}},
		}},
		{"rolled-back digest recommitted is not retried", []step{
			{files("iris", "canary", "w1", "    steps: [50, 100]", "    interval: 5s"), serves("iris")},
			{map[string]string{"iris/model/model.pkl": "bad"}, func(t *testing.T, f *fixture, prev serving.ModelStatus) {
				if _, err := f.rec.Command(commandCtx(t, f), "iris", rollout.Rollback); err != nil {
					t.Fatal(err)
				}
				if m := f.model("iris"); m.Phase != rollout.RolledBack || f.served("iris")[prev.Desired] != 100 {
					t.Fatalf("after rollback: phase %s, served %v", m.Phase, f.served("iris"))
				}
			}},
			{map[string]string{"iris/model/model.pkl": "w1"}, nil}, // back to good...
			{map[string]string{"iris/model/model.pkl": "bad"}, func(t *testing.T, f *fixture, _ serving.ModelStatus) { // ...and the bad one again
				m := f.model("iris")
				if m.Phase == rollout.Progressing || m.Phase == rollout.Deploying {
					t.Logf("recommitted the rolled-back digest: phase %s (%s)", m.Phase, m.Reason)
				}
				for v, w := range f.served("iris") {
					if v == m.RolledBack && w > 0 {
						t.Fatalf("the rolled-back version %s gets traffic again: %v", v, f.served("iris"))
					}
				}
			}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
			var prev serving.ModelStatus
			for i, s := range tc.steps {
				f.push(s.changes)
				if s.check != nil {
					t.Run(fmt.Sprint("commit", i+1), func(t *testing.T) { s.check(t, f, prev) })
				}
				prev = f.model("iris")
			}
		})
	}
}

// commandCtx runs the reconciler's loop for commands and previews, which
// are taken on the loop like everything else.
func commandCtx(t *testing.T, f *fixture) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case c := <-f.rec.commands:
				c.reply <- f.rec.command(ctx, c)
				f.rec.publish()
			case p := <-f.rec.previews:
				p.reply <- f.rec.preview(ctx, p)
				f.rec.publish()
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ctx
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

// TestClaims: two repositories declaring one model name: the first keeps
// it, the second reports a positioned error and deploys nothing.
func TestClaims(t *testing.T) {
	mem, claims := servingtest.NewMemory(), NewClaims()
	a := newFixture(t, mem, claims, "a")
	b := newFixture(t, mem, claims, "b")
	a.push(files("iris", "direct", "from-a"))
	b.push(files("iris", "direct", "from-b"))
	want := a.model("iris").Desired
	if got := a.served("iris"); got[want] != 100 || len(got) != 1 {
		t.Fatalf("iris serves %v, want %s from repository a", got, want)
	}
	msg := b.rec.Status().FileErrors["iris/merlin.yaml"]
	if !strings.Contains(msg, "iris/merlin.yaml:4:") || !strings.Contains(msg, "already served from repository a") {
		t.Fatalf("repository b's error: %q", msg)
	}
}

// TestSlowBuildDoesNotStall: a model whose build takes long does not hold
// up another model's deployment, commands or ticks.
func TestSlowBuildDoesNotStall(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
	f.b.hold, f.b.gate = "slow", make(chan struct{})
	ctx := t.Context()
	f.rec.reconcileRevision(ctx, f.repo.commit(merge(files("slow", "direct", "w"), files("fast", "direct", "w"))))
	deadline := time.Now().Add(10 * time.Second)
	for f.model("fast").Desired == "" || f.served("fast")[f.model("fast").Desired] != 100 {
		select {
		case b := <-f.rec.builds:
			f.rec.finishBuild(ctx, b)
		case <-time.After(20 * time.Millisecond):
		}
		f.rec.stepAll(ctx)
		f.rec.publish()
		if time.Now().After(deadline) {
			t.Fatalf("fast did not deploy while slow was building: %+v", f.model("fast"))
		}
	}
	slow := f.model("slow")
	if c, _ := serving.Find(slow.Conditions, serving.Progressing); c.Status != serving.True || c.Reason != serving.ReasonBuilding {
		t.Fatalf("slow model while building: %+v", slow.Conditions)
	}
	close(f.b.gate)
	f.drainBuilds()
	f.rec.stepAll(ctx)
	f.rec.publish()
	if m := f.model("slow"); f.served("slow")[m.Desired] != 100 {
		t.Fatalf("slow after its build: %+v", m)
	}
}

// TestNotReadyDoesNotStall: a version that never becomes ready keeps its
// model where it was and says why, while another model deploys.
func TestNotReadyDoesNotStall(t *testing.T) {
	mem := servingtest.NewMemory()
	f := newFixture(t, mem, NewClaims(), "models")
	f.push(files("iris", "canary", "w1", "    steps: [50, 100]", "    interval: 5s"))
	stable := f.model("iris").Desired
	// The next build's version will not become ready: hold every version
	// the builder makes from now on, by digest.
	ev := f.repo.commit(map[string]string{"iris/model/model.pkl": "w2"})
	f.rec.reconcileRevision(t.Context(), ev)
	b := <-f.rec.builds
	mem.Break(serving.VersionID("iris", b.res.Digest), "model.pkl: not a pickle")
	f.rec.finishBuild(t.Context(), b)
	f.push(files("wine", "direct", "w1"))
	if m := f.model("wine"); f.served("wine")[m.Desired] != 100 {
		t.Fatalf("wine did not deploy while iris's candidate failed: %+v", m)
	}
	m := f.model("iris")
	if f.served("iris")[stable] != 100 {
		t.Fatalf("iris traffic moved: %v", f.served("iris"))
	}
	if m.Phase != rollout.RolledBack && m.Phase != rollout.Deploying {
		t.Fatalf("iris phase %s (%s)", m.Phase, m.Reason)
	}
	t.Logf("iris: phase %s, reason %q", m.Phase, m.Reason)
}

// noCompare is a target that does not compare predictions (as kube).
type noCompare struct{ serving.Target }

// TestMinAgreementNeedsComparison: on a target that cannot compare
// predictions, minAgreement is a positioned error, not a silent hold.
func TestMinAgreementNeedsComparison(t *testing.T) {
	f := newFixture(t, noCompare{servingtest.NewMemory()}, NewClaims(), "models")
	f.push(files("iris", "canary", "w1", "    analysis:", "      minAgreement: 95%"))
	m := f.model("iris")
	c, _ := serving.Find(m.Conditions, serving.Degraded)
	if c.Status != serving.True || c.Reason != serving.ReasonManifest || !strings.Contains(c.Message, "iris/merlin.yaml:") ||
		!strings.Contains(c.Message, "minAgreement") {
		t.Fatalf("degraded %+v", c)
	}
}

// TestPreviewsBesideShadow: a shadow rollout and two pull requests'
// previews of one model mirror side by side, each its own share; closing
// a pull request removes its preview only.
func TestPreviewsBesideShadow(t *testing.T) {
	mem := servingtest.NewMemory()
	f := newFixture(t, mem, NewClaims(), "models")
	f.push(files("iris", "shadow", "w1", "    interval: 1h", "    mirrorPercent: 100"))
	f.push(map[string]string{"iris/model/model.pkl": "w2"})
	ctx := commandCtx(t, f)
	var previews []serving.Version
	for i, w := range []string{"pr7", "pr8"} {
		res, err := f.b.real.Build(fstest.MapFS{"model/MLmodel": {Data: []byte("flavors:\n  sklearn: {}\n")}, "model/model.pkl": {Data: []byte(w)}}, "model", &manifest.Model{Metadata: manifest.Metadata{Name: "iris"}, Spec: manifest.Spec{Type: manifest.TypeSKLearn}})
		if err != nil {
			t.Fatal(err)
		}
		v := serving.Version{ID: serving.VersionID("iris", res.Digest), Model: "iris", Digest: res.Digest, Bundle: res.Bundle}
		previews = append(previews, v)
		if err := f.rec.SetPreview(ctx, 7+i, v, 10*(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	d, _ := mem.Desired("iris")
	if len(d.Mirrors) != 3 || d.Mirrors[1] != (serving.Mirror{Version: previews[0].ID, Percent: 10}) || d.Mirrors[2] != (serving.Mirror{Version: previews[1].ID, Percent: 20}) {
		t.Fatalf("mirrors %+v, want the shadow candidate and two previews", d.Mirrors)
	}
	m := f.model("iris")
	var roles []string
	for _, v := range m.Versions {
		roles = append(roles, fmt.Sprintf("%s:%d:%d", v.Role, v.PR, v.Weight))
	}
	if strings.Join(roles, " ") != "stable:0:100 candidate:0:0 preview:7:0 preview:8:0" {
		t.Fatalf("versions %v", roles)
	}
	if err := f.rec.RemovePreviews(ctx, 7); err != nil {
		t.Fatal(err)
	}
	d, _ = mem.Desired("iris")
	if len(d.Mirrors) != 2 || d.Mirrors[1].Version != previews[1].ID {
		t.Fatalf("after closing #7: mirrors %+v", d.Mirrors)
	}
}

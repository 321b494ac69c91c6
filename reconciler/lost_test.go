package reconciler

import (
	"log/slog"
	"testing"

	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// TestNoChangeLostAfterFailure: a commit made while the repository or the
// model could not be reconciled is deployed once it can be, even when the
// commit that fixes things touches none of the model's files (issue 11,
// item 4). The poller's diff only covers the last commit; the reconciler
// must compare with what it last applied.
func TestNoChangeLostAfterFailure(t *testing.T) {
	tests := []struct {
		name string
		// breakRepo runs before the model change is committed; fix after.
		breakRepo, fix func(f *fixture)
	}{
		{"unreadable revisions",
			func(f *fixture) { f.repo.breakNew = true },
			func(f *fixture) { f.repo.breakNew = false }},
		{"failed build",
			func(f *fixture) { f.b.fail.Store("iris") },
			func(f *fixture) { f.b.fail.Store("") }},
		{"unreadable revisions, restart",
			func(f *fixture) { f.repo.breakNew = true },
			func(f *fixture) { f.repo.breakNew = false; f.restart() }},
		{"failed build, restart",
			func(f *fixture) { f.b.fail.Store("iris") },
			func(f *fixture) { f.b.fail.Store(""); f.restart() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
			f.push(merge(files("iris", "direct", "w1"), files("wine", "direct", "w1")))
			v1 := f.model("iris").Desired
			tc.breakRepo(f)
			// The model change lands while things are broken, and another
			// commit after it.
			f.push(map[string]string{"iris/model/model.pkl": "w2"})
			f.push(map[string]string{"README.md": "still broken"})
			if f.served("iris")[v1] != 100 {
				t.Fatalf("while broken, iris serves %v; want the last good %s", f.served("iris"), v1)
			}
			tc.fix(f)
			f.push(map[string]string{"wine/model/model.pkl": "w2"}) // touches another model only
			m := f.model("iris")
			if m.Desired == v1 || f.served("iris")[m.Desired] != 100 {
				t.Fatalf("after the fix HEAD has iris w2 but desired %s (v1 %s) serves %v; error %q",
					m.Desired, v1, f.served("iris"), m.LastError)
			}
			if c, _ := serving.Find(m.Conditions, serving.Degraded); c.Status == serving.True {
				t.Fatalf("iris still degraded after the fix: %+v", c)
			}
			if st := f.rec.Status(); st.Error != "" {
				t.Fatalf("repo error after the fix: %q", st.Error)
			}
		})
	}
}

// TestBuildLandingOnBrokenManifest: a build started before the model's
// manifest broke lands after it: the model stays held with the manifest's
// error (the status must not look healthy while HEAD is broken), and the
// fix builds it again.
func TestBuildLandingOnBrokenManifest(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
	f.push(files("iris", "direct", "w1"))
	ctx := t.Context()
	f.b.hold, f.b.gate = "iris", make(chan struct{})
	f.rec.reconcileRevision(ctx, f.repo.commit(map[string]string{"iris/model/model.pkl": "w2"}))
	f.rec.reconcileRevision(ctx, f.repo.commit(map[string]string{"iris/merlin.yaml": model("iris", "direct", "  replica: 2")}))
	close(f.b.gate)
	f.drainBuilds()
	f.rec.stepAll(ctx)
	f.rec.publish()
	m := f.model("iris")
	if c, _ := serving.Find(m.Conditions, serving.Degraded); !m.Held || c.Status != serving.True || c.Reason != serving.ReasonManifest {
		t.Fatalf("after a build landed on a broken manifest: held %v, degraded %+v", m.Held, c)
	}
	f.b.hold = ""
	f.push(map[string]string{"iris/merlin.yaml": model("iris", "direct", "  protocol: v1")})
	m = f.model("iris")
	if c, _ := serving.Find(m.Conditions, serving.Degraded); m.Held || c.Status == serving.True || f.served("iris")[m.Desired] != 100 || m.Commit != f.repo.head {
		t.Fatalf("after the fix: held %v, degraded %+v, desired %s from %s (head %s), served %v", m.Held, c, m.Desired, m.Commit, f.repo.head, f.served("iris"))
	}
}

// restart replaces the reconciler with a new one that loads the state the
// old one saved, as after a daemon restart.
func (f *fixture) restart() {
	f.t.Helper()
	f.rec.save(f.t.Context())
	rec, err := New(f.t.Context(), f.rec.cfg, f.rec.src, f.rec.target, f.b, nil, NewClaims(), slog.New(slog.DiscardHandler))
	if err != nil {
		f.t.Fatal(err)
	}
	f.rec = rec
}

// TestMissedRevision: an event whose previous revision is not the one the
// reconciler last reconciled (its state was saved by another replica, or
// a save failed) is compared with the state's revision, not the poller's.
func TestMissedRevision(t *testing.T) {
	f := newFixture(t, servingtest.NewMemory(), NewClaims(), "models")
	f.push(merge(files("iris", "direct", "w1"), files("wine", "direct", "w1")))
	v1 := f.model("iris").Desired
	f.repo.commit(map[string]string{"iris/model/model.pkl": "w2"}) // never delivered to this reconciler
	f.push(map[string]string{"wine/model/model.pkl": "w2"})
	if m := f.model("iris"); m.Desired == v1 || f.served("iris")[m.Desired] != 100 {
		t.Fatalf("iris changed in a revision this reconciler did not see: desired %s (v1 %s), served %v", m.Desired, v1, f.served("iris"))
	}
}

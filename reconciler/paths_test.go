package reconciler

import (
	"strings"
	"testing"

	"merlin.dev/merlin/serving/servingtest"
)

// under moves a commit's paths into dir.
func under(dir string, changes map[string]string) map[string]string {
	out := map[string]string{}
	for p, c := range changes {
		out[dir+"/"+p] = c
	}
	return out
}

// TestSearchPaths: repositories[].paths as people write them ("models/",
// "./models") find the manifests; a path that matches nothing is a
// repository error that deletes nothing (issue 11, item 5a).
func TestSearchPaths(t *testing.T) {
	for _, paths := range [][]string{{"models/"}, {"./models"}, {"./models/", "models"}, {"."}} {
		t.Run(strings.Join(paths, ","), func(t *testing.T) {
			f := newFixtureFrom(t, servingtest.NewMemory(), NewClaims(), "models", nil, paths)
			f.push(merge(under("models", files("iris", "direct", "w1")), files("elsewhere", "direct", "w1")))
			if st := f.rec.Status(); st.Error != "" {
				t.Fatalf("repository error %q", st.Error)
			}
			if m := f.model("iris"); m.Desired == "" || f.served("iris")[m.Desired] != 100 {
				t.Fatalf("iris under models/ not deployed: %+v", m)
			}
			if got, want := f.model("elsewhere").Name != "", paths[0] == "."; got != want {
				t.Fatalf("model outside the paths declared: %v, want %v", got, want)
			}
		})
	}
	t.Run("missing path", func(t *testing.T) {
		f := newFixtureFrom(t, servingtest.NewMemory(), NewClaims(), "models", nil, []string{"models"})
		f.push(under("models", files("iris", "direct", "w1")))
		v1 := f.model("iris").Desired
		// The directory is renamed; the configuration still says models.
		f.push(merge(under("modelz", files("iris", "direct", "w1")),
			map[string]string{"models/iris/merlin.yaml": "", "models/iris/model/MLmodel": "", "models/iris/model/model.pkl": ""}))
		if st := f.rec.Status(); !strings.Contains(st.Error, `paths: "models" does not exist in the repository`) {
			t.Fatalf("repository error %q; want the missing path named", st.Error)
		}
		if f.served("iris")[v1] != 100 {
			t.Fatalf("a path that matches nothing deleted iris: %v", f.served("iris"))
		}
	})
	t.Run("malformed path", func(t *testing.T) {
		for _, p := range []string{"/srv/models", "../models", "models/../.."} {
			f := newFixtureFrom(t, servingtest.NewMemory(), NewClaims(), "models", nil, []string{p})
			f.push(under("models", files("iris", "direct", "w1")))
			if st := f.rec.Status(); !strings.Contains(st.Error, "must be a directory inside the repository") {
				t.Errorf("%s: repository error %q", p, st.Error)
			}
		}
	})
}

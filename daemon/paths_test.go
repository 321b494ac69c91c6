package daemon

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/serving"
)

// TestChangeWhileRepoBroken runs the daemon on a real repository with
// paths written as SPEC §3 does ("models/", "./extra"). When a search path
// stops matching anything the repository error shows in /api/v1/repos and
// on the status page, and nothing is deleted; a model change committed
// meanwhile is deployed once the path is back, although the commit that
// fixes it touches none of the model's files (issue 11, items 4 and 5a).
func TestChangeWhileRepoBroken(t *testing.T) {
	py := requirePython(t)
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "models/iris")
	repo.Commit("extra", map[string]string{"extra/README.md": "more models later\n"})
	d := startDaemon(t, "local", fmt.Sprintf(`repositories: [{name: models, url: %q, interval: 1s, paths: ["models/", "./extra"]}]
local: {listen: "127.0.0.1:0", stateDir: %q, python: %q}
server: {listen: "127.0.0.1:0"}
`, repo.Bare, t.TempDir(), py))
	model := func() serving.ModelStatus { return d.model(t, "iris-sklearn") }
	repoErr := func() string {
		var out struct{ Repos []struct{ SHA, Error string } }
		call(t, http.MethodGet, d.api+"/api/v1/repos", &out)
		if len(out.Repos) != 1 {
			t.Fatalf("repos %+v", out.Repos)
		}
		return out.Repos[0].Error
	}
	poll.Until(t, time.Minute, "the first version is desired", func() bool { return model().Desired != "" })
	v1 := model().Desired

	broken := repo.Commit("drop extra", map[string]string{"extra": ""})
	poll.Until(t, time.Minute, "the missing path in /api/v1/repos", func() bool {
		return strings.Contains(repoErr(), `at `+broken[:12]+`: paths: "extra" does not exist`)
	})
	resp, err := http.Get(d.api + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.Contains(string(page), `paths: &#34;extra&#34; does not exist`) {
		t.Errorf("the status page does not show the repository error:\n%s", page)
	}

	manifest, err := os.ReadFile(filepath.Join("..", "examples", "iris-sklearn", "merlin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(manifest), "  protocol: v1\n", "  protocol: v1\n  env: [{name: LOG_LEVEL, value: debug}]\n", 1)
	meanwhile := repo.Commit("debug logs", map[string]string{"models/iris/merlin.yaml": changed})
	poll.Until(t, time.Minute, "the change seen while broken", func() bool { return strings.Contains(repoErr(), "at "+meanwhile[:12]) })
	if m := model(); m.Desired != v1 {
		t.Fatalf("a revision that failed to reconcile changed the model: %s → %s", v1, m.Desired)
	}

	fix := repo.Commit("extra again", map[string]string{"extra/README.md": "more models later\n"})
	poll.Until(t, time.Minute, "the change made while broken is desired", func() bool {
		m := model()
		return repoErr() == "" && m.Desired != v1 && m.Commit == fix
	})
}

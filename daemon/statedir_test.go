package daemon

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/server"
)

// repoView reads the one repository's view from /api/v1/repos.
func (r *running) repoView(t *testing.T) server.RepoView {
	t.Helper()
	var out struct{ Repos []server.RepoView }
	call(t, http.MethodGet, r.api+"/api/v1/repos", &out)
	if len(out.Repos) != 1 {
		t.Fatalf("repos: %+v", out.Repos)
	}
	return out.Repos[0]
}

// page reads the status page.
func (r *running) page(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(r.api + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// predictIris asks the router for an iris prediction and returns the
// status code and the version that answered.
func (r *running) predictIris(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+r.d.ModelsAddr()+"/v1/models/iris-sklearn:predict", "application/json",
		strings.NewReader(`{"instances": [[5.1, 3.5, 1.4, 0.2]]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Merlin-Version")
}

// retrained is the iris example's manifest with a setting that makes a
// new version, deployed at once (strategy direct).
func retrained(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "examples", "iris-sklearn", "merlin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(data), "  protocol: v1\n", "  protocol: v1\n  env: [{name: LOG_LEVEL, value: info}]\n", 1)
	if out == string(data) || !strings.Contains(out, "strategy: direct") {
		t.Fatal("examples/iris-sklearn/merlin.yaml: no protocol line, or not a direct rollout")
	}
	return out
}

// startIris starts a daemon on repo's working tree (as merlin up does),
// with stateDir, and waits until iris serves; it returns the version.
func startIris(t *testing.T, repo *gittest.Repo, stateDir string) (*running, string) {
	t.Helper()
	py := requirePython(t)
	d := startDaemonWith(t, "local", fmt.Sprintf(`repositories: [{name: models, url: %q, interval: 1s}]
local: {listen: "127.0.0.1:0", stateDir: %q, python: %q}
server: {listen: "127.0.0.1:0"}
`, repo.Work, stateDir, py), Options{Tick: 50 * time.Millisecond})
	var version string
	poll.Until(t, 2*time.Minute, "iris serves", func() bool {
		code, v := d.predictIris(t)
		version = v
		return code == http.StatusOK
	})
	return d, version
}

// TestRepoMovedAwayAndBack is merlin up's layout (the state directory in
// the repository's .git) with the repository moved away for a while: the
// daemon reports it missing, keeps serving, creates nothing at the old
// path (moving the repository back would nest it in such a skeleton), and
// deploys the next commit once it is back.
func TestRepoMovedAwayAndBack(t *testing.T) {
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "iris")
	d, before := startIris(t, repo, filepath.Join(repo.Work, ".git", "merlin"))

	away := repo.Work + ".away"
	if err := os.Rename(repo.Work, away); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, time.Minute, "the repository reported missing, and its state not saved", func() bool {
		v := d.repoView(t)
		return v.Git != nil && strings.Contains(v.Git.LastError, "(moved or deleted?)") && v.StateError != ""
	})
	if code, v := d.predictIris(t); code != http.StatusOK || v != before {
		t.Errorf("while the repository is away: predict %d from %q, want 200 from %s", code, v, before)
	}
	if _, err := os.Lstat(repo.Work); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("something was created at the repository's old path %s: %v", repo.Work, err)
	}
	if page := d.page(t); !strings.Contains(page, "(moved or deleted?)") {
		t.Errorf("the status page does not show the missing repository:\n%s", page)
	}

	if err := os.Rename(away, repo.Work); err != nil { // fails on a skeleton left at the old path
		t.Fatalf("moving the repository back: %v", err)
	}
	repo.Commit("retrain", map[string]string{"iris/merlin.yaml": retrained(t)})
	poll.Until(t, 2*time.Minute, "the next commit serves, the state is saved again", func() bool {
		v := d.repoView(t)
		_, version := d.predictIris(t)
		return version != before && v.StateError == "" && v.Git != nil && v.Git.LastError == ""
	})
	if n := strings.Count(d.logs.String(), `msg="state saved again"`); n != 1 {
		t.Errorf("%q logged %d times, want once", "state saved again", n)
	}
}

// TestStateNotSaved makes every save of the repository's state fail for
// real (its directory replaced by a file: ENOTDIR, as a full disk gives
// ENOSPC) while a new version rolls out, hundreds of reconciler ticks:
// the error is logged once, shown in the API and on the status page, and
// once the directory is back, "state saved again" is logged and the error
// clears.
func TestStateNotSaved(t *testing.T) {
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "iris")
	stateDir := t.TempDir()
	d, before := startIris(t, repo, stateDir)

	repos := filepath.Join(stateDir, "repos")
	if err := os.RemoveAll(repos); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(repos, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, time.Minute, "the state error shown", func() bool {
		return strings.Contains(d.repoView(t).StateError, "not a directory")
	})
	// A rollout while saves fail: the daemon goes on, through many ticks.
	repo.Commit("retrain", map[string]string{"iris/merlin.yaml": retrained(t)})
	poll.Until(t, 2*time.Minute, "the next version serves", func() bool {
		_, v := d.predictIris(t)
		return v != before
	})
	if page := d.page(t); !strings.Contains(page, "state not saved") {
		t.Errorf("the status page does not show the state error:\n%s", page)
	}
	if n := strings.Count(d.logs.String(), `msg="cannot save state"`); n != 1 {
		t.Errorf("%q logged %d times while saves failed, want once", "cannot save state", n)
	}

	if err := os.Remove(repos); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, time.Minute, "the state saved again", func() bool {
		_, err := os.Stat(filepath.Join(repos, "models.json"))
		return err == nil && d.repoView(t).StateError == ""
	})
	logs := d.logs.String()
	if n := strings.Count(logs, `msg="state saved again"`); n != 1 {
		t.Errorf("%q logged %d times, want once", "state saved again", n)
	}
	if n := strings.Count(logs, `msg="cannot save state"`); n != 1 {
		t.Errorf("%q logged %d times in all, want once", "cannot save state", n)
	}
}

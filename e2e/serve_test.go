package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
)

var irisRows = [][]float64{{5.1, 3.5, 1.4, 0.2}, {6.7, 3.0, 5.2, 2.3}, {5.9, 3.0, 4.2, 1.5}, {6.0, 2.2, 5.0, 1.5}, {4.9, 2.5, 4.5, 1.7}}

const model = "iris-sklearn"

// TestGitDaemonLifecycle drives one model through its life over git://:
// first commit → correct predictions; retrained model → new version with
// zero failed requests during the switch; broken manifest → previous
// version keeps answering and the API shows file:line:col; git server down
// for 30 s → keeps serving and recovers; model deleted → 404.
func TestGitDaemonLifecycle(t *testing.T) {
	requirePython(t)
	repo := gittest.NewRepo(t)
	server, url := gittest.StartDaemon(t, repo)
	repo.CommitDir("add iris", examplesDir(model), "models/"+model)
	m := newMerlin(t, url)
	m.start()

	// 1. The committed model serves Python's own predictions.
	first := m.waitServing("the first version to serve", model)
	want := pythonPredict(t, filepath.Join(examplesDir(model), "model"), irisRows)
	if got := predictions(t, first); got != normJSON(want) {
		t.Fatalf("predictions %s, Python's model.predict says %s", got, want)
	}
	if !regexp.MustCompile(`^iris-sklearn-[0-9a-f]{8}$`).MatchString(first.version) {
		t.Fatalf("X-Merlin-Version = %q", first.version)
	}

	// 2. A retrained model replaces it with no failed request.
	body := `{"instances": [[5.1, 3.5, 1.4, 0.2]]}`
	l := startLoad(m.models+"/v1/models/"+model+":predict", body, 4, 20*time.Millisecond)
	time.Sleep(time.Second)
	retrained := train(t, 7, 0.05)
	repo.CommitDir("retrain iris", retrained, "models/"+model)
	var second string
	m.eventually("the retrained version to serve", 60*time.Second, func() error {
		a, err := m.predict(model, irisRows)
		if err != nil || a.version == first.version {
			return fmt.Errorf("still %s (%w)", a.version, err)
		}
		second = a.version
		return nil
	})
	time.Sleep(2 * time.Second) // keep loading after the switch: the old version drains and stops
	l.stop()
	t.Logf("during the switch: %d requests at %.0f rps, %d failed, versions %v", l.ok.Load()+l.failed.Load(), l.rate(), l.failed.Load(), l.versions)
	if l.failed.Load() != 0 {
		t.Errorf("%d requests failed during the switch: %v", l.failed.Load(), l.failures[:min(5, len(l.failures))])
	}
	if l.rate() < 50 {
		t.Errorf("load loop ran at %.0f rps, want ≥ 50", l.rate())
	}
	if l.versions[first.version] == 0 || l.versions[second] == 0 {
		t.Errorf("the load did not see both versions: %v", l.versions)
	}
	a, _ := m.predict(model, irisRows)
	if got, want := predictions(t, a), normJSON(pythonPredict(t, filepath.Join(retrained, "model"), irisRows)); got != want {
		t.Errorf("retrained predictions %s, want %s", got, want)
	}

	// 3. A broken manifest keeps the last good version and reports file:line:col.
	manifest, err := os.ReadFile(filepath.Join(examplesDir(model), "merlin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(manifest), "  protocol: v1\n", "  protocol: v1\n  replica: 2\n", 1)
	repo.Commit("break the manifest", map[string]string{"models/" + model + "/merlin.yaml": broken})
	line := 1 + strings.Count(broken[:strings.Index(broken, "  replica: 2")], "\n")
	wantErr := fmt.Sprintf("models/%s/merlin.yaml:%d:3: spec.replica: unknown field", model, line)
	m.eventually("the manifest error in the API", 30*time.Second, func() error {
		v, err := m.model(model)
		if err == nil && !strings.Contains(v.LastError, wantErr) {
			err = fmt.Errorf("lastError %q", v.LastError)
		}
		return err
	})
	if a, err := m.predict(model, irisRows); err != nil || a.code != 200 || a.version != second {
		t.Fatalf("after a broken manifest: %d %s %v", a.code, a.version, err)
	}

	// 4. The git server goes away for 30 s: serving continues, then recovers.
	server.Stop()
	outage := time.Now()
	for time.Since(outage) < 30*time.Second {
		if a, err := m.predict(model, irisRows); err != nil || a.code != 200 {
			t.Fatalf("during the git outage: %d %v", a.code, err)
		}
		time.Sleep(time.Second)
	}
	if b, err := get(m.api + "/api/v1/repos"); err != nil || !strings.Contains(string(b), `"lastError"`) {
		t.Errorf("the git outage is not visible in /api/v1/repos: %s %v", b, err)
	}
	server.Start()
	repo.Commit("fix the manifest", map[string]string{"models/" + model + "/merlin.yaml": string(manifest)})
	m.eventually("recovery after the outage", 90*time.Second, func() error {
		v, err := m.model(model)
		if err == nil && (v.LastError != "" || v.Held) {
			err = fmt.Errorf("still %q", v.LastError)
		}
		return err
	})

	// 5. Deleting the model removes its endpoint.
	repo.Commit("remove iris", map[string]string{"models/" + model: ""})
	m.eventually("a 404 after deletion", 30*time.Second, func() error {
		a, err := m.predict(model, irisRows)
		if err == nil && a.code != http.StatusNotFound {
			err = fmt.Errorf("%d %s", a.code, a.body)
		}
		return err
	})
	m.eventually("the deleted version's server to stop", 30*time.Second, func() error {
		if pids := modelServers(m.stateDir); len(pids) > 0 {
			return fmt.Errorf("model servers still running: %v", pids)
		}
		return nil
	})
}

// TestSmartHTTP serves a repository through git http-backend.
func TestSmartHTTP(t *testing.T) {
	requirePython(t)
	repo := gittest.NewRepo(t)
	url, _ := gittest.StartHTTP(t, repo, false, "")
	repo.CommitDir("add iris", examplesDir(model), model)
	m := newMerlin(t, url)
	m.start()
	m.waitServing("the model to serve over smart HTTP", model)
}

// TestRestart restarts the daemon: after kill -9 the running model server
// is adopted (same process, no restart); after SIGTERM no model server is
// left behind, and the restarted daemon serves the same version again
// without a new rollout.
func TestRestart(t *testing.T) {
	requirePython(t)
	repo := gittest.NewRepo(t)
	_, url := gittest.StartDaemon(t, repo)
	repo.CommitDir("add iris", examplesDir(model), model)
	m := newMerlin(t, url)
	m.start()
	serving := func() answer {
		t.Helper()
		return m.waitServing("the model to serve", model)
	}
	before := serving()
	pids := modelServers(m.stateDir)
	if len(pids) != 1 {
		t.Fatalf("model servers before restart: %v", pids)
	}

	// kill -9: the model server survives and is adopted.
	m.stop(syscall.SIGKILL)
	if got := modelServers(m.stateDir); !slices.Equal(got, pids) {
		t.Fatalf("model servers after kill -9: %v, want %v still running", got, pids)
	}
	logStart := len(m.log.String())
	m.start()
	after := serving()
	if after.version != before.version {
		t.Errorf("version changed across kill -9: %s → %s", before.version, after.version)
	}
	if got := modelServers(m.stateDir); !slices.Equal(got, pids) {
		t.Errorf("model servers after restart: %v, want the adopted %v", got, pids)
	}
	restartLog := m.log.String()[logStart:]
	if !strings.Contains(restartLog, "adopted running model server") || strings.Contains(restartLog, "model server started") {
		t.Errorf("the model server was restarted instead of adopted:\n%s", restartLog)
	}

	// SIGTERM: nothing is left running.
	m.stop(syscall.SIGTERM)
	if got := modelServers(m.stateDir); len(got) != 0 {
		t.Fatalf("orphan model servers after SIGTERM: %v", got)
	}
	logStart = len(m.log.String())
	m.start()
	again := serving()
	if again.version != before.version {
		t.Errorf("version changed across SIGTERM: %s → %s", before.version, again.version)
	}
	restartLog = m.log.String()[logStart:]
	if strings.Contains(restartLog, "event=deploy") || strings.Contains(restartLog, "built model") && strings.Contains(restartLog, "event=promote") {
		t.Errorf("restart started a new rollout:\n%s", restartLog)
	}
}

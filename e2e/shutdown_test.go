package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/poll"
)

// burstRepo commits n copies of the iris example, each its own model
// (burst-00, burst-01, ...), in one commit.
func burstRepo(t *testing.T, n int) *gittest.Repo {
	t.Helper()
	manifest, err := os.ReadFile(filepath.Join(examplesDir(model), "merlin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	modelDir := filepath.Join(examplesDir(model), "model")
	entries, err := os.ReadDir(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("burst-%02d", i)
		files[name+"/merlin.yaml"] = strings.Replace(string(manifest), "name: "+model, "name: "+name, 1)
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(modelDir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[name+"/model/"+e.Name()] = string(data)
		}
	}
	repo := gittest.NewRepo(t)
	repo.Commit(fmt.Sprintf("%d models", n), files)
	return repo
}

// TestSIGTERMDuringStartBurst stops a real `merlin run` with SIGTERM in
// the middle of a burst of deployments: 40 models committed at once, some
// of their model servers ready, some loading, some not started yet. When
// merlin has exited, no model server it started may be running.
func TestSIGTERMDuringStartBurst(t *testing.T) {
	requirePython(t)
	const n = 40
	repo := burstRepo(t, n)
	m := newMerlin(t, repo.Bare)
	m.start()
	poll.Until(t, 3*time.Minute, "a burst of model servers starting, one of them ready", func() bool {
		return len(modelServers(m.stateDir)) >= 10 && strings.Contains(m.log.String(), `msg="model server ready"`)
	})
	running := len(modelServers(m.stateDir))
	m.stop(syscall.SIGTERM)

	log := m.log.String()
	after := log[strings.Index(log, "shutting down"):]
	t.Logf("SIGTERM with %d model servers running (%d ready) of %d models; %d servers started in all, %d after SIGTERM, %d needed SIGKILL",
		running, strings.Count(log, `msg="model server ready"`), n, strings.Count(log, `msg="model server started"`),
		strings.Count(after, `msg="model server started"`), strings.Count(after, "did not stop in time"))
	if left := modelServers(m.stateDir); len(left) > 0 {
		t.Fatalf("%d model servers left running after SIGTERM: %v", len(left), left)
	}
}

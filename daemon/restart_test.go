package daemon

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/reconciler"
	"merlin.dev/merlin/serving"
)

// crash ends a daemon as a crash would for its model servers: they keep
// running, recorded in the state directory, for the next daemon to adopt.
func (r *running) crash(t *testing.T) {
	t.Helper()
	r.d.local.Detach()
	r.stop()
	err := <-r.done
	r.done <- err // for startDaemon's cleanup
}

// newDaemonErr starts a daemon that is expected to fail, and returns how.
func newDaemonErr(t *testing.T, config string) error {
	t.Helper()
	cfg, err := ParseConfig("failing.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		d.abandon()
		t.Fatal("the daemon started")
	}
	return err
}

// serverPID is the pid of the model server recorded for a version.
func serverPID(t *testing.T, stateDir, version string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(stateDir, "local", "run", version+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct{ PID int }
	if err := json.Unmarshal(data, &rec); err != nil || rec.PID <= 0 {
		t.Fatalf("run record %s: %v", data, err)
	}
	return rec.PID
}

func requireAlive(t *testing.T, pid int, after string) {
	t.Helper()
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("model server %d is gone after %s: %v", pid, after, err)
	}
}

// TestRestartProtectsModelServers restarts a local-target daemon, with
// real git and real model servers, through every way a start can fail
// after a crash. The model server the crashed daemon left running keeps
// running through each failure: a port in use (bound before anything is
// adopted), a truncated and an empty state file (the error names the
// file; nothing is reset to the head of the branch). The last good copy
// of the state file then restores the state (the paused rollout stays
// paused) and the server is adopted, not restarted. A second daemon on
// the same state directory fails at once on its lock, naming the first's
// pid, and the first one's model server keeps answering.
func TestRestartProtectsModelServers(t *testing.T) {
	py := requirePython(t)
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "iris")
	stateDir := t.TempDir()
	config := func(listen string) string {
		return fmt.Sprintf(`repositories: [{name: models, url: %q, interval: 1s}]
local: {listen: %q, stateDir: %q, python: %q}
server: {listen: "127.0.0.1:0"}
`, repo.Bare, listen, stateDir, py)
	}
	statePath := filepath.Join(stateDir, "repos", "models.json")
	model := func(r *running) serving.ModelStatus { return r.model(t, "iris-sklearn") }

	a := startDaemon(t, "a", config("127.0.0.1:0"))
	poll.Until(t, 2*time.Minute, "the first version serves", func() bool {
		ms := model(a)
		return len(ms.Versions) == 1 && ms.Versions[0].Weight == 100 && ms.Versions[0].Ready()
	})
	version := model(a).Versions[0].Version
	if code, _ := call(t, http.MethodPost, a.api+"/api/v1/models/iris-sklearn/pause", nil); code != http.StatusOK {
		t.Fatalf("pause: %d", code)
	}
	poll.Until(t, 10*time.Second, "the pause is saved", func() bool {
		data, _ := os.ReadFile(statePath)
		return strings.Contains(string(data), `"paused": true`)
	})
	pid := serverPID(t, stateDir, version)
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
	a.crash(t)
	requireAlive(t, pid, "the crash")

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = newDaemonErr(t, config(taken.Addr().String()))
	taken.Close()
	if !strings.Contains(err.Error(), "listen on "+taken.Addr().String()) {
		t.Errorf("port in use: %v", err)
	}
	requireAlive(t, pid, "a start with its port in use")

	good, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(statePath + reconciler.LastGoodSuffix); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"truncated": good[:len(good)/2], "empty": nil} {
		if err := os.WriteFile(statePath, content, 0o644); err != nil {
			t.Fatal(err)
		}
		err := newDaemonErr(t, config("127.0.0.1:0"))
		if !strings.Contains(err.Error(), statePath) {
			t.Errorf("%s state file: %v; want an error naming %s", name, err, statePath)
		}
		requireAlive(t, pid, "a start with a "+name+" state file")
	}

	if err := os.WriteFile(statePath+reconciler.LastGoodSuffix, good, 0o644); err != nil {
		t.Fatal(err)
	}
	b := startDaemon(t, "b", config("127.0.0.1:0"))
	poll.Until(t, time.Minute, "restored from the last good copy: paused, serving the same version", func() bool {
		ms := model(b)
		return ms.Paused && len(ms.Versions) == 1 && ms.Versions[0].Version == version && ms.Versions[0].Weight == 100 && ms.Versions[0].Ready()
	})
	if got := serverPID(t, stateDir, version); got != pid {
		t.Errorf("model server %d after the restart; want %d adopted", got, pid)
	}

	start := time.Now()
	err = newDaemonErr(t, config("127.0.0.1:0"))
	if !strings.Contains(err.Error(), "in use by another merlin daemon (pid "+strconv.Itoa(os.Getpid())+",") {
		t.Errorf("second daemon on the state dir: %v; want a lock error naming pid %d", err, os.Getpid())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the second daemon took %v to fail", d)
	}
	requireAlive(t, pid, "a second daemon on the same state dir")
	for range 5 {
		resp, err := http.Post("http://"+b.d.ModelsAddr()+"/v1/models/iris-sklearn:predict", "application/json", strings.NewReader(`{"instances": [[5.1, 3.5, 1.4, 0.2]]}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("predict after the second daemon failed: %d", resp.StatusCode)
		}
	}
	if got := serverPID(t, stateDir, version); got != pid {
		t.Errorf("model server %d after the second daemon; want %d still", got, pid)
	}
}

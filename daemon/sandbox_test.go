package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/poll"
)

// daemonSecrets are variables a daemon holds and a model must never see.
var daemonSecrets = map[string]string{
	"GITHUB_TOKEN":          "ghp_daemon_secret",
	"MERLIN_WEBHOOK_SECRET": "webhook_daemon_secret",
	"MLFLOW_TRACKING_TOKEN": "mlflow_daemon_secret",
	"MERLIN_API_TOKEN":      "api_daemon_secret",
}

// probeManifest serves serving/local/testdata/probe, a model whose code
// runs at load time, reports its environment and user, and tries to write
// every path of write.
func probeManifest(write []string) string {
	return fmt.Sprintf(`apiVersion: merlin.dev/v1
kind: Model
metadata: {name: probe}
spec:
  type: pyfunc
  source: {path: ./model}
  env:
    - {name: MODEL_SETTING, value: "on"}
    - {name: PROBE_WRITE, value: %q}
  rollout: {strategy: direct}
`, strings.Join(write, string(os.PathListSeparator)))
}

// TestModelServersWithoutSecrets runs a real daemon that holds secrets in
// its environment and serves two models from one repository: the iris
// example, then a committed model whose code runs at load time. That code
// sees none of the daemon's secrets, only the manifest's env and the
// runtime's variables (/proc/PID/environ says the same); under a root
// daemon it runs as nobody, without groups, and cannot write the state
// directory, the state files, the other model's bundle or its own.
func TestModelServersWithoutSecrets(t *testing.T) {
	py := requirePython(t)
	for k, v := range daemonSecrets {
		t.Setenv(k, v)
	}
	t.Setenv("LANG", "C.UTF-8")
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A daemon creates its state directory 0700; this one is made
	// traversable, so that the model's writes there are refused by the
	// permissions of what it can reach.
	stateDir := filepath.Join(base, "state")
	if err := os.Mkdir(stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "iris")
	d := startDaemon(t, "sandbox", fmt.Sprintf(`repositories: [{name: models, url: %q, interval: 1s}]
local: {listen: "127.0.0.1:0", stateDir: %q, python: %q}
server: {listen: "127.0.0.1:0"}
`, repo.Bare, stateDir, py))
	serves := func(model string) func() bool {
		return func() bool {
			ms := d.model(t, model)
			return len(ms.Versions) == 1 && ms.Versions[0].Weight == 100 && ms.Versions[0].Ready()
		}
	}
	poll.Until(t, 2*time.Minute, "iris serves", serves("iris-sklearn"))
	irisBundles, err := filepath.Glob(filepath.Join(stateDir, "bundles", "models", "*"))
	if err != nil || len(irisBundles) != 1 {
		t.Fatalf("iris bundles: %v, %v", irisBundles, err)
	}
	write := []string{
		stateDir, filepath.Join(stateDir, "bundles"), filepath.Join(stateDir, "local"),
		filepath.Join(stateDir, "local", "run"), filepath.Join(stateDir, "local", "logs"),
		filepath.Join(stateDir, "local", "deployments.json"), filepath.Join(stateDir, "repos", "models.json"),
		irisBundles[0], filepath.Join(irisBundles[0], "model.pkl"),
	}
	repo.CommitDir("add the probe", filepath.Join("..", "serving", "local", "testdata", "probe"), "probe/model")
	repo.Commit("serve the probe", map[string]string{"probe/merlin.yaml": probeManifest(write)})
	poll.Until(t, 2*time.Minute, "the probe serves", serves("probe"))

	rep := askProbe(t, d)
	t.Logf("the probe reports uid %d gid %d groups %v, writes %v, HOME %s: %s, env %v", rep.UID, rep.GID, rep.Groups, rep.Writes, rep.Env["HOME"], rep.Home, rep.Env)
	version := d.model(t, "probe").Versions[0].Version
	pid := serverPID(t, stateDir, version)
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range daemonSecrets {
		if _, ok := rep.Env[k]; ok || strings.Contains(string(environ), v) {
			t.Errorf("the model server sees the daemon's %s", k)
		}
	}
	if rep.Env["MODEL_SETTING"] != "on" || rep.Env["LANG"] != "C.UTF-8" || rep.Env["PATH"] == "" ||
		!strings.Contains(string(environ), "\x00MODEL_SETTING=on\x00") {
		t.Errorf("model environment %v; want the manifest's MODEL_SETTING, the daemon's LANG and a PATH", rep.Env)
	}
	if home := rep.Env["HOME"]; rep.Home != "written" || home != rep.Env["TMPDIR"] || !strings.Contains(home, version) {
		t.Errorf("HOME %s (%s), TMPDIR %s; want one scratch directory of the version's, writable", home, rep.Home, rep.Env["TMPDIR"])
	}

	if os.Geteuid() != 0 {
		t.Skip("SKIPPING the user checks: the daemon is not root, so its model servers run as itself")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rep.UID) != nobody.Uid || fmt.Sprint(rep.GID) != nobody.Gid || len(rep.Groups) != 0 {
		t.Errorf("model server runs as %d:%d groups %v; want nobody (%s:%s) without groups", rep.UID, rep.GID, rep.Groups, nobody.Uid, nobody.Gid)
	}
	if want := len(write) + 2; len(rep.Writes) != want { // and its own bundle and MLmodel
		t.Errorf("the probe tried %d writes; want %d", len(rep.Writes), want)
	}
	for target, got := range rep.Writes {
		if got != "PermissionError" {
			t.Errorf("writing %s: %s; want PermissionError", target, got)
		}
	}
	err = filepath.WalkDir(stateDir, func(path string, e fs.DirEntry, err error) error {
		if err == nil && e.Name() == "written-by-model" {
			t.Errorf("the model wrote %s", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// Stopping the daemon stops the server's whole process group (another
	// user's) and removes its scratch directory.
	d.stop()
	err = <-d.done
	d.done <- err // for startDaemon's cleanup
	poll.Until(t, 30*time.Second, "the probe's process group is gone", func() bool {
		return errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH)
	})
	if _, err := os.Stat(rep.Env["HOME"]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("scratch directory after the daemon stopped: %v; want it removed", err)
	}
}

// probeReport is what the probe model answers.
type probeReport struct {
	UID    int               `json:"uid"`
	GID    int               `json:"gid"`
	Groups []int             `json:"groups"`
	Env    map[string]string `json:"env"`
	Writes map[string]string `json:"writes"`
	Home   string            `json:"home"`
}

func askProbe(t *testing.T, d *running) probeReport {
	t.Helper()
	resp, err := http.Post("http://"+d.d.ModelsAddr()+"/v1/models/probe:predict", "application/json", strings.NewReader(`{"instances": [[1]]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Predictions probeReport `json:"predictions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("predict: %d, %v", resp.StatusCode, err)
	}
	return out.Predictions
}

// TestRunAsUnknownUser: a local.runAsUser that names no user stops the
// start with an error naming it.
func TestRunAsUnknownUser(t *testing.T) {
	repo := gittest.NewRepo(t)
	repo.Commit("empty", map[string]string{"README": "models go here\n"})
	err := newDaemonErr(t, fmt.Sprintf(`repositories: [{name: models, url: %q}]
local: {listen: "127.0.0.1:0", stateDir: %q, runAsUser: merlin-no-such-user}
server: {listen: "127.0.0.1:0"}
`, repo.Bare, t.TempDir()))
	if !strings.Contains(err.Error(), `runAsUser "merlin-no-such-user": user: unknown user merlin-no-such-user`) {
		t.Errorf("start with an unknown runAsUser: %v", err)
	}
}

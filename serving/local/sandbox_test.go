package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

func TestServerEnv(t *testing.T) {
	daemon := []string{
		"GITHUB_TOKEN=ghp_secret", "MERLIN_WEBHOOK_SECRET=hook", "MLFLOW_TRACKING_TOKEN=mlflow",
		"AWS_SECRET_ACCESS_KEY=aws", "MERLIN_API_TOKEN=api", "PYTHONPATH=/daemon/site", "LD_PRELOAD=/x.so",
		"HOME=/root", "TMPDIR=/daemon/tmp", "USER=root", "SSH_AUTH_SOCK=/tmp/agent",
		"PATH=/opt/py/bin:/usr/bin", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "LC_NUMERIC=de_DE.UTF-8",
		"TZ=Europe/Paris", "OMP_NUM_THREADS=2", "MKL_NUM_THREADS=3", "NOEQUALS",
	}
	for _, tc := range []struct {
		name   string
		daemon []string
		env    []manifest.EnvVar
		want   []string
	}{
		{
			name: "empty daemon environment: a default PATH and the scratch directory",
			want: []string{"HOME=/tmp/merlin-v-1", "PATH=" + defaultPATH, "TMPDIR=/tmp/merlin-v-1"},
		},
		{
			name:   "the daemon's runtime variables pass, its secrets and the rest do not",
			daemon: daemon,
			want: []string{
				"HOME=/tmp/merlin-v-1", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "LC_NUMERIC=de_DE.UTF-8", "MKL_NUM_THREADS=3",
				"OMP_NUM_THREADS=2", "PATH=/opt/py/bin:/usr/bin", "TMPDIR=/tmp/merlin-v-1", "TZ=Europe/Paris",
			},
		},
		{
			name:   "the manifest's env is added and wins over the runtime's",
			daemon: daemon,
			env: []manifest.EnvVar{
				{Name: "LOG_LEVEL", Value: "debug"}, {Name: "OMP_NUM_THREADS", Value: "4"},
				{Name: "HOME", Value: "/models/home"}, {Name: "GITHUB_TOKEN", Value: "the model's own"},
			},
			want: []string{
				"GITHUB_TOKEN=the model's own", "HOME=/models/home", "LANG=C.UTF-8", "LC_ALL=C.UTF-8",
				"LC_NUMERIC=de_DE.UTF-8", "LOG_LEVEL=debug", "MKL_NUM_THREADS=3", "OMP_NUM_THREADS=4",
				"PATH=/opt/py/bin:/usr/bin", "TMPDIR=/tmp/merlin-v-1", "TZ=Europe/Paris",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := serverEnv(tc.daemon, "/tmp/merlin-v-1", tc.env)
			if !slices.Equal(got, tc.want) {
				t.Errorf("serverEnv:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestLookupRunAs(t *testing.T) {
	nobody, err := user.Lookup(DefaultRunAsUser)
	if err != nil {
		t.Skipf("SKIPPING: no user %s on this machine: %v", DefaultRunAsUser, err)
	}
	nobodyUID, err := strconv.Atoi(nobody.Uid)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		euid       int
		configured string
		want       string // user name; "" for the daemon's own
		err        string
	}{
		{name: "root drops to nobody by default", euid: 0, want: DefaultRunAsUser},
		{name: "root drops to the configured user", euid: 0, configured: DefaultRunAsUser, want: DefaultRunAsUser},
		{name: "root keeps root when told", euid: 0, configured: "root"},
		{name: "an unknown user is an error naming it", euid: 0, configured: "merlin-no-such-user", err: `runAsUser "merlin-no-such-user": user: unknown user merlin-no-such-user`},
		{name: "another daemon runs servers as itself", euid: 1000},
		{name: "another daemon may name itself", euid: nobodyUID, configured: DefaultRunAsUser},
		{name: "another daemon cannot change user", euid: 1000, configured: DefaultRunAsUser, err: "the daemon runs as uid 1000, not root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lookupRunAs(tc.euid, tc.configured)
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("lookupRunAs = %+v, %v; want an error containing %q", got, err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case tc.want == "" && got != nil:
				t.Fatalf("lookupRunAs = %+v; want the daemon's user", got)
			case tc.want != "" && (got == nil || got.name != tc.want || fmt.Sprint(got.uid) != nobody.Uid || fmt.Sprint(got.gid) != nobody.Gid):
				t.Fatalf("lookupRunAs = %+v; want %s (%s:%s)", got, tc.want, nobody.Uid, nobody.Gid)
			}
		})
	}
}

// probeReport is what the probe model (testdata/probe) answers.
type probeReport struct {
	UID    int               `json:"uid"`
	GID    int               `json:"gid"`
	Groups []int             `json:"groups"`
	Env    map[string]string `json:"env"`
	Bundle string            `json:"bundle"`
	Writes map[string]string `json:"writes"`
	Home   string            `json:"home"`
}

// probeModel copies testdata/probe into a directory of its own (mode 0700,
// as a builder's temporary directory is).
func probeModel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("testdata", "probe"))); err != nil {
		t.Fatal(err)
	}
	return dir
}

// askProbe predicts once through the router and decodes the report.
func askProbe(t *testing.T, h http.Handler, model string) probeReport {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/models/"+model+":predict", "application/json", strings.NewReader(`{"instances": [[1]]}`))
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

// procUID is the real uid of a running process, from /proc.
func procUID(t *testing.T, pid int) string {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			return strings.Fields(rest)[0]
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return ""
}

// TestModelServerSandbox runs a real model server under a root target,
// with the state directory and the bundle in directories private to root
// (0700, as t.TempDir makes them): the server runs as nobody with no
// supplementary groups, reaches its bundle and package through its
// descriptors, sees none of the daemon's secrets, writes its HOME but not
// its bundle. A daemon that detaches leaves it running with its scratch
// directory; the next one adopts it (a process of another user) and, when
// closed, stops its whole process group and removes the scratch directory.
func TestModelServerSandbox(t *testing.T) {
	requireSklearn(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING: dropping privileges needs a root daemon; run the tests as root (CI does)")
	}
	nobody, err := user.Lookup(DefaultRunAsUser)
	if err != nil {
		t.Fatalf("no user %s: %v", DefaultRunAsUser, err)
	}
	t.Setenv("GITHUB_TOKEN", "ghp_daemon_secret")
	t.Setenv("MLFLOW_TRACKING_TOKEN", "mlflow_daemon_secret")
	t.Setenv("OMP_NUM_THREADS", "2")
	dir := t.TempDir()
	v := testVersion("probe", 1, probeModel(t))
	v.Type = manifest.TypePyFunc
	v.Env = []manifest.EnvVar{{Name: "MODEL_SETTING", Value: "on"}}
	// Two pre-forked workers: the process group holds more than the leader.
	l, err := New(Options{StateDir: dir, Workers: 2, DrainTimeout: time.Second, StopTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Apply(context.Background(), serving.Deployment{Model: "probe", Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Minute, "the probe serves", func() bool { return l.servable(v.ID) })
	rep := askProbe(t, l, "probe")
	t.Logf("the probe reports uid %d gid %d groups %v, writes %v, HOME %s: %s, env %v", rep.UID, rep.GID, rep.Groups, rep.Writes, rep.Env["HOME"], rep.Home, rep.Env)
	if fmt.Sprint(rep.UID) != nobody.Uid || fmt.Sprint(rep.GID) != nobody.Gid || len(rep.Groups) != 0 {
		t.Errorf("model server runs as %d:%d groups %v; want %s:%s, no groups", rep.UID, rep.GID, rep.Groups, nobody.Uid, nobody.Gid)
	}
	for _, k := range []string{"GITHUB_TOKEN", "MLFLOW_TRACKING_TOKEN"} {
		if _, ok := rep.Env[k]; ok {
			t.Errorf("the model sees the daemon's %s", k)
		}
	}
	if rep.Env["MODEL_SETTING"] != "on" || rep.Env["OMP_NUM_THREADS"] != "2" || rep.Env["HOME"] != rep.Env["TMPDIR"] {
		t.Errorf("model environment %v; want the manifest's MODEL_SETTING, the daemon's OMP_NUM_THREADS, HOME = TMPDIR", rep.Env)
	}
	scratch := rep.Env["HOME"]
	if rep.Home != "written" || !strings.HasPrefix(filepath.Base(scratch), scratchPrefix+v.ID) {
		t.Errorf("HOME %s: %s; want a scratch directory of its own, writable", scratch, rep.Home)
	}
	if len(rep.Writes) != 2 {
		t.Errorf("the probe tried to write %v; want its bundle and its MLmodel", rep.Writes)
	}
	for target, got := range rep.Writes {
		if got != "PermissionError" {
			t.Errorf("writing %s: %s; want PermissionError", target, got)
		}
	}
	if _, err := os.Stat(filepath.Join(v.Bundle, "written-by-model")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the model wrote into its bundle (%v)", err)
	}
	pid := recordedPID(t, dir, v.ID)
	killAtEnd(t, pid)
	group := processGroup(t, pid)
	if len(group) < 3 {
		t.Errorf("process group %d: %v; want the server and its 2 workers", pid, group)
	}
	for _, p := range group {
		if uid := procUID(t, p); uid != nobody.Uid {
			t.Errorf("/proc/%d/status: uid %s; want %s", p, uid, nobody.Uid)
		}
	}
	// ps still shows what the server serves.
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.Contains(string(cmdline), "\x00--bundle\x00"+v.Bundle+"\x00") {
		t.Errorf("/proc/%d/cmdline %q (%v); want --bundle %s", pid, cmdline, err, v.Bundle)
	}

	l.Detach()
	if _, err := os.Stat(scratch); !alive(pid) || err != nil {
		t.Fatalf("after Detach: server alive %v, scratch directory %v; want both kept", alive(pid), err)
	}
	l = newTestLocal(t, dir)
	poll.Until(t, 30*time.Second, "the server is adopted", func() bool { return l.servable(v.ID) })
	if got := recordedPID(t, dir, v.ID); got != pid {
		t.Fatalf("server restarted as %d; want %d adopted", got, pid)
	}
	if rep := askProbe(t, l, "probe"); rep.Env["HOME"] != scratch {
		t.Errorf("adopted server answers with HOME %s; want %s", rep.Env["HOME"], scratch)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "the server's process group is gone", func() bool {
		return errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH)
	})
	if _, err := os.Stat(scratch); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scratch directory %s after Close: %v; want it removed", scratch, err)
	}
}

// servable reports whether a version is ready (a test helper).
func (l *Local) servable(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.readyLocked(id)
}

// TestRunAsUserCannotRunPython: under a root target, an interpreter that
// the model servers' user cannot run (here behind a directory private to
// root) fails New with one error naming the user and the interpreter,
// instead of failing every model server; kept as root, it starts.
func TestRunAsUserCannotRunPython(t *testing.T) {
	requireSklearn(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING: dropping privileges needs a root daemon; run the tests as root (CI does)")
	}
	private := t.TempDir() // 0700
	python := filepath.Join(private, "python3")
	if err := os.Symlink("/usr/bin/python3", python); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{StateDir: t.TempDir(), Python: python, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "model servers run as nobody (runAsUser), who cannot run "+python) {
		t.Fatalf("New with a python nobody cannot run: %v", err)
	}
	t.Log(err)
	l, err := New(Options{StateDir: t.TempDir(), Python: python, RunAsUser: "root", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New as root: %v", err)
	}
	l.Close()
}

// TestExitMessageNamesBundle: a server that cannot load its model says so
// with its bundle's path, not the descriptor it was given.
func TestExitMessageNamesBundle(t *testing.T) {
	requireSklearn(t)
	v := testVersion("iris", 1, brokenModel(t, irisModel(t)))
	l := newTestLocal(t, t.TempDir())
	defer l.Close()
	if err := l.Apply(context.Background(), serving.Deployment{Model: "iris", Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}); err != nil {
		t.Fatal(err)
	}
	var s serving.VersionStatus
	poll.Until(t, time.Minute, "the load failure is reported", func() bool {
		s, _ = servingtest.StatusOf(t, l, "iris").Version(v.ID)
		return s.LastError != ""
	})
	t.Log(s.LastError)
	if !strings.Contains(s.LastError, v.Bundle) || strings.Contains(s.LastError, "/proc/self/fd") {
		t.Errorf("last error %q; want it to name %s", s.LastError, v.Bundle)
	}
}

// TestRemoveScratch: a path read back from a run record is removed only
// when it names a scratch directory: merlin-* directly in the temporary
// directory.
func TestRemoveScratch(t *testing.T) {
	mk := func(dir, pattern string) string {
		d, err := os.MkdirTemp(dir, pattern)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	scratch := mk("", scratchPrefix+"v-")
	keep := []string{mk("", "other-"), mk(t.TempDir(), scratchPrefix+"nested-")}
	for _, d := range append(keep, scratch) {
		if err := os.WriteFile(filepath.Join(d, "f"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		removeScratch(d)
	}
	if _, err := os.Stat(scratch); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scratch directory %s: %v; want it removed", scratch, err)
	}
	for _, d := range keep {
		if _, err := os.Stat(filepath.Join(d, "f")); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
}

// processGroup lists the live processes of process group pgid.
func processGroup(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

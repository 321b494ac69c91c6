package local

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// recordedPID is the pid in a version's run record.
func recordedPID(t *testing.T, dir, id string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "run", id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil || r.PID <= 0 {
		t.Fatalf("record %s: %+v, %v", data, r, err)
	}
	return r.PID
}

// killAtEnd stops a model server that a test left running.
func killAtEnd(t *testing.T, pid int) {
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
}

func predictOK(t *testing.T, l *Local) {
	t.Helper()
	srv := httptest.NewServer(l)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/models/iris:predict", "application/json", strings.NewReader(`{"instances": [[5.1, 3.5, 1.4, 0.2]]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("predict: %d", resp.StatusCode)
	}
}

// TestDetachAndCorruptDeployments: Detach leaves the model server running
// with its record, and the next target adopts it (same pid). A truncated
// deployments.json is restored from its last good copy, still adopting the
// server; an empty one without a copy fails New naming the file, and the
// server the previous run left keeps running (it is not taken for a
// server nobody wants).
func TestDetachAndCorruptDeployments(t *testing.T) {
	requireSklearn(t)
	dir := t.TempDir()
	v := testVersion("iris", 1, irisModel(t))
	l := newTestLocal(t, dir)
	if err := l.Apply(context.Background(), serving.Deployment{Model: "iris", Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Minute, "the version serves", func() bool {
		s, _ := servingtest.StatusOf(t, l, "iris").Version(v.ID)
		return s.Ready() && s.Weight == 100
	})
	pid := recordedPID(t, dir, v.ID)
	killAtEnd(t, pid)
	l.Detach()
	l.Close() // nothing left to stop
	if !alive(pid) {
		t.Fatalf("model server %d stopped by Detach", pid)
	}

	deployments := filepath.Join(dir, "deployments.json")
	good, err := os.ReadFile(deployments)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(deployments, good[:len(good)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	l = newTestLocal(t, dir)
	poll.Until(t, 30*time.Second, "the last good copy restored, the server adopted", func() bool {
		s, _ := servingtest.StatusOf(t, l, "iris").Version(v.ID)
		return s.Ready() && s.Weight == 100
	})
	if got := recordedPID(t, dir, v.ID); got != pid {
		t.Fatalf("server restarted as %d; want %d adopted", got, pid)
	}
	predictOK(t, l)
	l.Detach()

	for _, f := range []string{deployments, deployments + lastGoodSuffix} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err = New(Options{StateDir: dir, Logger: l.log})
	if err == nil || !strings.Contains(err.Error(), deployments) {
		t.Fatalf("New with an empty deployments.json: %v; want an error naming %s", err, deployments)
	}
	if !alive(pid) {
		t.Fatalf("model server %d stopped by a failed start", pid)
	}
}

// TestKilledServerExitReason: a nesting bomb is answered 400 through the
// router and the server keeps serving; a server killed later by a signal
// is reported as such, never with a line its log held from before (a
// request's traceback, say).
func TestKilledServerExitReason(t *testing.T) {
	requireSklearn(t)
	dir := t.TempDir()
	v := testVersion("iris", 1, irisModel(t))
	l := newTestLocal(t, dir)
	defer l.Close()
	if err := l.Apply(context.Background(), serving.Deployment{Model: "iris", Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Minute, "the version serves", func() bool {
		s, _ := servingtest.StatusOf(t, l, "iris").Version(v.ID)
		return s.Ready()
	})
	// A nesting bomb through the router: a 400 with a JSON error, and the
	// server keeps serving.
	srv := httptest.NewServer(l)
	defer srv.Close()
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	resp, err := http.Post(srv.URL+"/v1/models/iris:predict", "application/json", strings.NewReader(`{"instances": `+deep+`}`))
	if err != nil {
		t.Fatal(err)
	}
	var answer struct{ Error string }
	derr := json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || derr != nil || answer.Error == "" {
		t.Errorf("nesting bomb: %d, error %q (%v); want 400 with a JSON error", resp.StatusCode, answer.Error, derr)
	}
	predictOK(t, l)
	// A line the log holds from before the crash, as a request's
	// traceback would be.
	logf, err := os.OpenFile(filepath.Join(dir, "logs", v.ID+".log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := logf.WriteString("RecursionError: maximum recursion depth exceeded (a stale line)\n"); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	if err := syscall.Kill(recordedPID(t, dir, v.ID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var s serving.VersionStatus
	poll.Until(t, 30*time.Second, "the exit is reported", func() bool {
		s, _ = servingtest.StatusOf(t, l, "iris").Version(v.ID)
		return s.Restarts > 0
	})
	if !strings.Contains(s.LastError, "killed by signal 9") || strings.Contains(s.LastError, "RecursionError") {
		t.Errorf("last error %q; want the signal, not the stale log line", s.LastError)
	}
}

// TestLastLineAfterOffset: only what was written after the offset counts,
// and a log shorter than the offset (replaced) gives nothing.
func TestLastLineAfterOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.log")
	if err := os.WriteFile(path, []byte("old traceback\nRecursionError: old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if got := lastLine(path, st.Size()); got != "" {
		t.Errorf("nothing new: %q", got)
	}
	if got := lastLine(path, st.Size()+100); got != "" {
		t.Errorf("offset past the end: %q", got)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("merlin: cannot load model\n\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := lastLine(path, st.Size()); got != "merlin: cannot load model" {
		t.Errorf("new line: %q", got)
	}
}

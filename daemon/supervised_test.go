package daemon

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/internal/testlog"
	"merlin.dev/merlin/serving"
)

// TestSupervisedRestart kills a supervised `merlin run` with -9 in the
// middle of a canary (50/50 between two real model servers) while clients
// send 50 predictions a second, and lets the supervisor start it again,
// twice: with the listening sockets held by the supervisor and passed to
// each daemon (socket activation, as merlin.socket does), and with a
// daemon that binds its own (the plain re-bind). It logs what clients saw
// of each restart side by side.
//
// Either way the restarted daemon adopts both model servers (same pids)
// at the same step, and the requests sent once it serves are all answered,
// by both versions. With socket activation no connection is ever refused:
// the sockets outlive the daemon, connections wait in the accept queue,
// and the model servers hold none of them nor the protocol's variables.
func TestSupervisedRestart(t *testing.T) {
	py := requirePython(t)
	gittest.RequireGit(t)
	bin := buildMerlin(t)
	modes := []string{"socket activation", "plain re-bind"}
	figures := map[string]outage{}
	for _, mode := range modes {
		t.Run(strings.ReplaceAll(mode, " ", "_"), func(t *testing.T) {
			figures[mode] = supervisedRestart(t, bin, py, mode == modes[0])
		})
	}
	t.Run("merlin_up", func(t *testing.T) { figures["merlin up"] = supervisedUp(t, bin) })
	for _, mode := range append(modes, "merlin up") {
		if o, ok := figures[mode]; ok {
			t.Logf("restart, %-17s: %s", mode, o)
		}
	}
}

// supervisedUp kills `merlin up`, socket-activated on its one --listen
// address as a systemd user unit would run it, under 50 requests a second
// to /healthz: no connection is refused, and once the new daemon answers
// it answers every request.
func supervisedUp(t *testing.T, bin string) outage {
	repo := gittest.NewRepo(t)
	repo.Commit("no models yet", map[string]string{"README": "models come later\n"})
	f, addr := listenFile(t)
	sup := &supervisor{t: t, bin: bin, args: []string{"up", repo.Work, "--listen", addr, "--state-dir", t.TempDir()},
		socks: []*os.File{f}, names: []string{"merlin-up.socket"}, log: &testlog.Buffer{}}
	t.Cleanup(func() {
		sup.stop()
		if t.Failed() {
			t.Logf("supervisor and merlin log:\n%s", sup.log)
		}
	})
	sup.run()
	url := "http://" + addr + "/healthz"
	poll.Until(t, time.Minute, "merlin up answers on the passed socket", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	l := startLoad(url, "", 50)
	poll.Until(t, 30*time.Second, "the load is answered", func() bool { return l.answered(time.Time{}) >= 25 })
	killed := time.Now()
	if err := syscall.Kill(sup.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, time.Minute, "the supervisor starts merlin up again", func() bool { n, _ := sup.started(); return n == 2 })
	_, restarted := sup.started()
	poll.Until(t, time.Minute, "a second of requests sent after the restart is answered", func() bool { return l.answered(restarted) >= 50 })
	shots := l.finish()
	o := measure(shots, killed, restarted)
	t.Logf("restart: %s", o)
	t.Logf("the restarted daemon, from its start: %s; first served %d ms", phases(sup.log.String(), restarted), o.firstServedStart.Milliseconds())
	if o.refused > 0 {
		t.Errorf("%d connections refused while the supervisor held the socket", o.refused)
	}
	first := firstAnswer(shots, killed)
	for _, s := range shots {
		if s.start.After(first) && !s.ok() {
			t.Errorf("a request sent %v after the restarted daemon answered: %d %v", s.start.Sub(first).Round(time.Millisecond), s.code, s.err)
		}
	}
	return o
}

// firstAnswer is when the first request sent after since was answered.
func firstAnswer(shots []shot, since time.Time) time.Time {
	var first time.Time
	for _, s := range shots {
		if s.ok() && s.start.After(since) && (first.IsZero() || s.end.Before(first)) {
			first = s.end
		}
	}
	return first
}

// canaryIris is the iris example with a canary that holds at 50% (for an
// hour) and extra spec lines, which make a new version.
func canaryIris(t *testing.T, extra string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "examples", "iris-sklearn", "merlin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(data), "    strategy: direct\n", "    strategy: canary\n    steps: [50, 100]\n    interval: 1h\n", 1)
	if !strings.Contains(out, "strategy: canary") {
		t.Fatal("examples/iris-sklearn/merlin.yaml has no direct strategy to replace")
	}
	return strings.Replace(out, "  protocol: v1\n", "  protocol: v1\n"+extra, 1)
}

// modelOf reads a model's status from the API at addr; false while the
// API does not answer (the daemon is starting).
func modelOf(addr, name string) (serving.ModelStatus, bool) {
	var ms serving.ModelStatus
	resp, err := http.Get("http://" + addr + "/api/v1/models/" + name)
	if err != nil {
		return ms, false
	}
	defer resp.Body.Close()
	return ms, resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&ms) == nil
}

// split is a model's routed weights, by version, when every version is
// ready.
func split(ms serving.ModelStatus) map[string]int {
	out := map[string]int{}
	for _, v := range ms.Versions {
		if !v.Ready() {
			return nil
		}
		out[v.Version] = v.Weight
	}
	return out
}

// supervisedRestart runs one kill -9 and restart under load.
func supervisedRestart(t *testing.T, bin, py string, activated bool) outage {
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "iris")
	repo.Commit("canary rollouts", map[string]string{"iris/merlin.yaml": canaryIris(t, "")})
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	config := filepath.Join(dir, "merlin.config.yaml")
	sup := &supervisor{t: t, bin: bin, args: []string{"run", "--config", config}, log: &testlog.Buffer{}}
	var models, api string
	if activated {
		mf, m := listenFile(t)
		af, a := listenFile(t)
		sup.socks, sup.names, models, api = []*os.File{mf, af}, []string{SocketModels, SocketAPI}, m, a
	} else {
		models, api = fmt.Sprintf("127.0.0.1:%d", gittest.FreePort(t)), fmt.Sprintf("127.0.0.1:%d", gittest.FreePort(t))
	}
	yaml := fmt.Sprintf(`repositories: [{name: models, url: %q, interval: 1s}]
local: {listen: %q, stateDir: %q, python: %q}
server: {listen: %q}
`, repo.Bare, models, stateDir, py, api)
	if err := os.WriteFile(config, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sup.stop()
		if t.Failed() {
			t.Logf("supervisor and merlin log:\n%s", sup.log)
		}
	})
	sup.run()

	poll.Until(t, 2*time.Minute, "the first version serves", func() bool {
		ms, ok := modelOf(api, "iris-sklearn")
		return ok && len(split(ms)) == 1
	})
	repo.Commit("debug logs", map[string]string{"iris/merlin.yaml": canaryIris(t, "  env: [{name: LOG_LEVEL, value: debug}]\n")})
	var before map[string]int
	poll.Until(t, 2*time.Minute, "the canary takes 50%", func() bool {
		ms, ok := modelOf(api, "iris-sklearn")
		before = split(ms)
		return ok && len(before) == 2 && !slices.Contains(slices.Collect(maps.Values(before)), 100)
	})
	pids := map[string]int{}
	for v := range before {
		pids[v] = serverPID(t, stateDir, v)
		pid := pids[v]
		t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
		if activated {
			requireNotInherited(t, pid, sup.socks)
		}
	}

	url, body := "http://"+models+"/v1/models/iris-sklearn:predict", `{"instances": [[5.1, 3.5, 1.4, 0.2]]}`
	l := startLoad(url, body, 50)
	poll.Until(t, 30*time.Second, "the load is answered", func() bool { return l.answered(time.Time{}) >= 25 })
	killed := time.Now()
	if err := syscall.Kill(sup.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, time.Minute, "the supervisor starts merlin again", func() bool { n, _ := sup.started(); return n == 2 })
	_, restarted := sup.started()
	poll.Until(t, 2*time.Minute, "a second of requests sent after the restart is answered", func() bool { return l.answered(restarted) >= 50 })
	shots := l.finish()
	o := measure(shots, killed, restarted)
	t.Logf("restart: %s", o)
	t.Logf("the restarted daemon, from its start: %s; first served %d ms", phases(sup.log.String(), restarted), o.firstServedStart.Milliseconds())
	if len(o.errs) > 0 {
		t.Logf("failures, the first: %s", strings.Join(o.errs, "; "))
	}

	// Once the new daemon answers, it answers everything, from the
	// adopted servers, at the same step.
	first := firstAnswer(shots, killed)
	answeredBy := map[string]int{}
	for _, s := range shots {
		if !s.start.After(first) {
			continue
		}
		answeredBy[s.version]++
		if _, known := before[s.version]; !s.ok() || !known {
			t.Errorf("a request sent %v after the restarted daemon answered: %d %q %v; want 200 from one of %v",
				s.start.Sub(first).Round(time.Millisecond), s.code, s.version, s.err, before)
		}
	}
	if len(answeredBy) != 2 {
		t.Errorf("after the restart, answers by version: %v; want both of %v", answeredBy, before)
	}
	// The router serves adopted versions before the reconciler has
	// reported the model again in the API: wait for the report.
	var after map[string]int
	poll.Until(t, time.Minute, "the API reports the model again", func() bool {
		ms, ok := modelOf(api, "iris-sklearn")
		after = split(ms)
		return ok && len(after) > 0
	})
	if !maps.Equal(after, before) {
		t.Errorf("split after the restart %v; want %v (the same step)", after, before)
	}
	for v, pid := range pids {
		requireAlive(t, pid, "the restart")
		if got := serverPID(t, stateDir, v); got != pid {
			t.Errorf("model server of %s: %d after the restart; want %d adopted", v, got, pid)
		}
		if activated {
			requireNotInherited(t, pid, sup.socks)
		}
	}
	if activated && o.refused > 0 {
		t.Errorf("%d connections refused while the supervisor held the sockets", o.refused)
	}
	return o
}

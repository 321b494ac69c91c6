package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/testlog"
)

// bin is the merlin binary under test, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "merlin-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "merlin")
	build := exec.Command("go", "build", "-o", bin, "merlin.dev/merlin/cmd/merlin")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build merlin:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requirePython skips loudly when Debian's Python lacks the model libraries
// (make test installs them, so CI never skips).
func requirePython(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("/usr/bin/python3", "-c", "import sklearn, xgboost, cloudpickle").CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but /usr/bin/python3 cannot import sklearn/xgboost/cloudpickle (run hack/test-deps.sh): %v %s", err, out)
		}
		t.Skipf("SKIPPING: /usr/bin/python3 cannot import sklearn/xgboost (apt-get install python3-sklearn python3-xgboost python3-cloudpickle; make test does): %v %s", err, out)
	}
}

func examplesDir(name string) string {
	abs, _ := filepath.Abs(filepath.Join("..", "examples", name))
	return abs
}

// merlinProc is a `merlin run` process.
type merlinProc struct {
	t        testing.TB
	cmd      *exec.Cmd
	config   string
	stateDir string
	models   string // http://host:port of the model endpoint
	api      string // http://host:port of the API
	log      *testlog.Buffer
	exited   chan struct{}
	// env is added to merlin's environment.
	env []string
}

// newMerlin writes a configuration watching repoURL and returns a process
// ready to start.
func newMerlin(t testing.TB, repoURL string) *merlinProc {
	t.Helper()
	dir := t.TempDir()
	m := &merlinProc{
		t: t, stateDir: filepath.Join(dir, "state"), config: filepath.Join(dir, "merlin.config.yaml"),
		models: fmt.Sprintf("http://127.0.0.1:%d", gittest.FreePort(t)),
		api:    fmt.Sprintf("http://127.0.0.1:%d", gittest.FreePort(t)),
	}
	cfg := fmt.Sprintf(`repositories:
  - name: models
    url: %s
    branch: main
    interval: 1s
target: local
local: {listen: %s, stateDir: %s}
server: {listen: %s}
`, repoURL, strings.TrimPrefix(m.models, "http://"), m.stateDir, strings.TrimPrefix(m.api, "http://"))
	if err := os.WriteFile(m.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("merlin log:\n%s", m.log)
		}
		killServers(m.stateDir)
	})
	return m
}

func (m *merlinProc) start() {
	m.t.Helper()
	if m.log == nil {
		m.log = &testlog.Buffer{}
	}
	m.cmd = exec.Command(bin, "run", "--config", m.config)
	m.cmd.Env = append(os.Environ(), m.env...)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(m.cmd, m.exited)
	m.eventually("the API answers", 20*time.Second, func() error {
		_, err := get(m.api + "/healthz")
		return err
	})
}

// stop signals merlin and waits for it to exit.
func (m *merlinProc) stop(sig syscall.Signal) {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(45 * time.Second):
		m.t.Errorf("merlin did not exit within 45s of %v", sig)
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	m.cmd = nil
}

// eventually retries check until it returns nil, failing the test after
// timeout with the last error.
func (m *merlinProc) eventually(what string, timeout time.Duration, check func() error) {
	m.t.Helper()
	eventually(m.t, what, timeout, check)
}

func eventually(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

// modelServers lists the pids of model servers whose command line names
// stateDir.
func modelServers(stateDir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(stateDir)) && bytes.Contains(cmdline, []byte("--model-dir")) {
			if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && !bytes.Contains(stat, []byte(") Z ")) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func killServers(stateDir string) {
	for _, pid := range modelServers(stateDir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// answer is one prediction response.
type answer struct {
	code    int
	version string
	body    []byte
}

var client = &http.Client{Timeout: 30 * time.Second}

func post(url, body string) (answer, error) {
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, version: resp.Header.Get("X-Merlin-Version"), body: b}, err
}

func get(url string) ([]byte, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, err
}

// modelView is the part of /api/v1/models the tests read.
type modelView struct {
	Name      string
	Phase     string
	LastError string
	Held      bool
	Versions  []struct {
		Version, Role, State, Endpoint string
		Weight                         int
	}
}

func (m *merlinProc) model(name string) (modelView, error) {
	var v modelView
	b, err := get(m.api + "/api/v1/models/" + name)
	if err != nil {
		return v, err
	}
	return v, json.Unmarshal(b, &v)
}

// predict asks for iris predictions over KServe V1.
func (m *merlinProc) predict(model string, rows [][]float64) (answer, error) {
	body, _ := json.Marshal(map[string]any{"instances": rows})
	return post(m.models+"/v1/models/"+model+":predict", string(body))
}

// waitServing waits until name answers iris predictions with 200 and
// returns that answer.
func (m *merlinProc) waitServing(what, name string) answer {
	m.t.Helper()
	var a answer
	m.eventually(what, 60*time.Second, func() error {
		var err error
		a, err = m.predict(name, irisRows)
		if err == nil && a.code != http.StatusOK {
			err = fmt.Errorf("%d %s", a.code, a.body)
		}
		return err
	})
	return a
}

// pythonPredict returns what the model's own predict() says for rows,
// computed by Python on the pickled model.
func pythonPredict(t testing.TB, modelDir string, rows [][]float64) string {
	t.Helper()
	in, _ := json.Marshal(rows)
	script := `import sys, json, cloudpickle
m = cloudpickle.load(open(sys.argv[1] + "/model.pkl", "rb"))
print(json.dumps(m.predict(json.loads(sys.argv[2])).tolist()))`
	out, err := exec.Command("/usr/bin/python3", "-c", script, modelDir, string(in)).CombinedOutput()
	if err != nil {
		t.Fatalf("python predict: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// predictions extracts the predictions of a V1 answer, normalised.
func predictions(t testing.TB, a answer) string {
	t.Helper()
	var doc struct{ Predictions json.RawMessage }
	if err := json.Unmarshal(a.body, &doc); err != nil {
		t.Fatalf("unreadable answer %q: %v", a.body, err)
	}
	var v any
	_ = json.Unmarshal(doc.Predictions, &v)
	norm, _ := json.Marshal(v)
	return string(norm)
}

func normJSON(s string) string {
	var v any
	_ = json.Unmarshal([]byte(s), &v)
	b, _ := json.Marshal(v)
	return string(b)
}

// train writes a retrained iris model (another seed and C) into a new
// directory holding a copy of the example, and returns it.
func train(t testing.TB, seed int, c float64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "iris-sklearn")
	if out, err := exec.Command("cp", "-r", examplesDir("iris-sklearn"), dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	out, err := exec.Command("/usr/bin/python3", filepath.Join(dir, "train.py"), "--out", filepath.Join(dir, "model"),
		"--seed", fmt.Sprint(seed), "--c", fmt.Sprint(c)).CombinedOutput()
	if err != nil {
		t.Fatalf("train.py: %v\n%s", err, out)
	}
	return dir
}

// load is a bounded concurrent request loop recording every answer.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	versions   map[string]int
	failures   []string
	start      time.Time
	elapsed    time.Duration
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// startLoad sends predictions with workers goroutines, each pausing
// between requests, until stop.
func startLoad(url, body string, workers int, pause time.Duration) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{versions: map[string]int{}, start: time.Now(), cancel: cancel}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				a, err := post(url, body)
				l.mu.Lock()
				if err != nil || a.code != http.StatusOK {
					l.failed.Add(1)
					l.failures = append(l.failures, fmt.Sprintf("%d %v %s", a.code, err, a.body))
				} else {
					l.ok.Add(1)
					l.versions[a.version]++
				}
				l.mu.Unlock()
				time.Sleep(pause)
			}
		}()
	}
	return l
}

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
	l.elapsed = time.Since(l.start)
}

func (l *load) rate() float64 {
	return float64(l.ok.Load()+l.failed.Load()) / l.elapsed.Seconds()
}

package modelserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/testlog"
)

// These tests start real Python model servers. They need Debian's
// /usr/bin/python3 with python3-numpy, python3-yaml, python3-sklearn,
// python3-xgboost and python3-cloudpickle (hack/test-deps.sh installs them);
// python3-torch for the pytorch test.

const (
	sklearnModel = "../../../examples/iris-sklearn/model"
	xgboostModel = "../../../examples/iris-xgboost/model"
)

// irisRows are rows of the iris data set (one per class) plus in-between ones.
var irisRows = [][]float64{
	{5.1, 3.5, 1.4, 0.2},
	{7.0, 3.2, 4.7, 1.4},
	{6.3, 3.3, 6.0, 2.5},
	{5.9, 3.0, 5.1, 1.8},
	{6.0, 2.7, 5.1, 1.6},
	{4.9, 2.5, 4.5, 1.7},
	{5.5, 2.6, 4.4, 1.2},
}

var pyModules sync.Map // module list -> error (nil: importable)

// requirePython skips the test, loudly, unless /usr/bin/python3 can import
// numpy, yaml and the given modules.
func requirePython(t *testing.T, modules ...string) {
	t.Helper()
	key := strings.Join(modules, ",")
	v, ok := pyModules.Load(key)
	if !ok {
		var err error
		if _, err = os.Stat(DefaultPython); err == nil {
			code := "import numpy, yaml"
			for _, m := range modules {
				code += ", " + m
			}
			var out []byte
			if out, err = exec.Command(DefaultPython, "-c", code).CombinedOutput(); err != nil {
				err = fmt.Errorf("%w: %s", err, lastLine(string(out)))
			}
		}
		v, _ = pyModules.LoadOrStore(key, err)
	}
	if err, _ := v.(error); err != nil {
		t.Skipf("SKIPPING REAL MODEL-SERVER TEST: %s cannot import numpy yaml %s (%v); "+
			"run hack/test-deps.sh or apt-get install python3-numpy python3-yaml python3-sklearn python3-xgboost python3-cloudpickle python3-torch",
			DefaultPython, key, err)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// proc is a model server started by a test.
type proc struct {
	cmd    *exec.Cmd
	addr   string // host:port
	url    string // http://host:port
	output *testlog.Buffer
	done   chan struct{}
	err    error // from Wait, valid after done is closed
}

// start runs the model server on a fresh loopback listener; the test's copy
// of the listener is closed right after Start, as the daemon does.
func start(t *testing.T, o Options) *proc {
	t.Helper()
	script, err := Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if o.Name == "" {
		o.Name = "m"
	}
	if o.Version == "" {
		o.Version = "v1"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{addr: ln.Addr().String(), output: &testlog.Buffer{}, done: make(chan struct{})}
	p.url = "http://" + p.addr
	p.cmd = Command(script, o, f)
	p.cmd.Stdout = p.output
	p.cmd.Stderr = p.output
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ln.Close()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) // the whole process group
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("model server %d did not die after SIGKILL", p.cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("model server output:\n%s", p.output.String())
		}
	})
	return p
}

// startReady starts the server and waits until /v2/health/ready answers 200.
func startReady(t *testing.T, o Options) *proc {
	t.Helper()
	p := start(t, o)
	p.waitReady(t)
	return p
}

func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("model server exited before it was ready (%v):\n%s", p.err, p.output.String())
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		default:
		}
		resp, err := client.Get(p.url + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("model server not ready after 90s:\n%s", p.output.String())
}

// wait waits for the server to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("model server still running after %v:\n%s", timeout, p.output.String())
	}
	var ee *exec.ExitError
	if p.err == nil {
		return 0
	}
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	t.Fatalf("wait: %v", p.err)
	return -1
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// call sends a request and returns the status and the decoded JSON body.
func call(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	code, out, err := tryCall(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return code, out
}

// tryCall is call for other goroutines than the test's: it checks that the
// response is JSON with a correct Content-Type and Content-Length.
func tryCall(ctx context.Context, method, url, body string) (int, map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return 0, nil, fmt.Errorf("%s %s: Content-Type %q", method, url, ct)
	}
	if resp.ContentLength != int64(len(data)) {
		return 0, nil, fmt.Errorf("%s %s: Content-Length %d, body %d bytes", method, url, resp.ContentLength, len(data))
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		return 0, nil, fmt.Errorf("%s %s: %d, body is not a JSON object: %w: %s", method, url, resp.StatusCode, err, data)
	}
	return resp.StatusCode, out, nil
}

// pythonJSON runs a Python snippet and decodes the JSON it prints.
func pythonJSON(t *testing.T, code string, args ...string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, DefaultPython, append([]string{"-c", code}, args...)...)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("python: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("python: %v", err)
	}
	var v any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("python printed %q: %v", out, err)
	}
	return v
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func requireExample(t *testing.T, dir string) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(abs, "MLmodel")); err != nil {
		t.Fatalf("example model missing (run /usr/bin/python3 train.py in %s): %v", filepath.Dir(abs), err)
	}
	return abs
}

// ---------------------------------------------------------------- no Python --

func TestInstall(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "bin")
	pkg, err := Install(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "modelserver-"+SourceHash(), PackageName); pkg != want {
		t.Errorf("path %s, want %s", pkg, want)
	}
	if len(SourceHash()) != 12 {
		t.Errorf("SourceHash() = %q", SourceHash())
	}
	// Every embedded file, and nothing else (no __pycache__, no tests).
	var want []string
	_ = fs.WalkDir(Source, PackageName, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			want = append(want, strings.TrimPrefix(p, PackageName+"/"))
		}
		return err
	})
	var got []string
	_ = filepath.WalkDir(pkg, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(pkg, p)
			got = append(got, filepath.ToSlash(rel))
		}
		return err
	})
	for _, name := range []string{"__init__.py", "__main__.py", "config.py", "protocol.py", "server.py",
		"mlmodel.py", "loaders/__init__.py", "loaders/sklearn.py"} {
		if !slices.Contains(want, name) {
			t.Errorf("%s is not embedded (embedded: %q)", name, want)
		}
	}
	for _, name := range want {
		if strings.Contains(name, "__pycache__") || !strings.HasSuffix(name, ".py") {
			t.Errorf("embedded %s", name)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("installed %q\nwant %q", got, want)
	}
	main := filepath.Join(pkg, "__main__.py")
	src, _ := Source.ReadFile(PackageName + "/__main__.py")
	st1, _ := os.Stat(main)
	time.Sleep(10 * time.Millisecond)
	again, err := Install(dir)
	if err != nil || again != pkg {
		t.Fatalf("second Install = %q, %v", again, err)
	}
	st2, _ := os.Stat(main)
	if !st1.ModTime().Equal(st2.ModTime()) {
		t.Errorf("an identical package was rewritten")
	}
	// A corrupted file is replaced.
	if err := os.WriteFile(main, []byte("broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(main); !bytes.Equal(got, src) {
		t.Errorf("corrupted package was not rewritten")
	}
	// So is a missing one.
	if err := os.Remove(filepath.Join(pkg, "loaders", "sklearn.py")); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pkg, "loaders", "sklearn.py")); err != nil {
		t.Errorf("missing file was not rewritten: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("leftover files in %s: %v", dir, entries)
	}
	// The temporary directory of an Install killed long ago is removed by
	// the next one that writes; a recent one (maybe in progress) is kept.
	stale := filepath.Join(dir, ".modelserver-"+SourceHash()+".tmp-123")
	recent := filepath.Join(dir, ".modelserver-"+SourceHash()+".tmp-456")
	for _, d := range []string{stale, recent} {
		if err := os.MkdirAll(filepath.Join(d, PackageName), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(main); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temporary directory kept: %v", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("recent temporary directory removed: %v", err)
	}
	// Concurrent installs into a fresh directory all succeed.
	dir2 := filepath.Join(t.TempDir(), "bin")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			if _, err := Install(dir2); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if entries, _ := os.ReadDir(dir2); len(entries) != 1 {
		t.Errorf("leftover files in %s: %v", dir2, entries)
	}
}

func TestCommand(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := Command("/s/merlin_modelserver", Options{ModelDir: "/m", Name: "iris", Version: "v2", Workers: 2,
		OrphanTimeout: 90 * time.Second}, f)
	want := []string{DefaultPython, "-u", "-B", "/s/merlin_modelserver", "--model-dir", "/m", "--name", "iris", "--version", "v2",
		"--fd", "3", "--workers", "2", "--orphan-timeout", "90"}
	if !slices.Equal(cmd.Args, want) {
		t.Errorf("args %q\nwant %q", cmd.Args, want)
	}
	if cmd.Path != DefaultPython {
		t.Errorf("path %q", cmd.Path)
	}
	if len(cmd.ExtraFiles) != 1 || cmd.ExtraFiles[0] != f {
		t.Errorf("ExtraFiles %v", cmd.ExtraFiles)
	}
	if cmd.SysProcAttr == nil || !cmd.SysProcAttr.Setpgid {
		t.Errorf("Setpgid not set")
	}
	cmd = Command("pkg", Options{Python: "/opt/py", ModelDir: "m", Name: "n", Version: "v",
		OrphanTimeout: 1500 * time.Millisecond}, f)
	if cmd.Args[0] != "/opt/py" || !slices.Contains(cmd.Args, "1.5") || slices.Contains(cmd.Args, "--workers") {
		t.Errorf("args %q", cmd.Args)
	}
}

func TestPython(t *testing.T) {
	requirePython(t)
	py, err := Python()
	if err != nil || py != DefaultPython {
		t.Fatalf("Python() = %q, %v", py, err)
	}
}

// ------------------------------------------------------------------ sklearn --

func TestSklearn(t *testing.T) {
	requirePython(t, "sklearn", "cloudpickle")
	t.Parallel()
	dir := requireExample(t, sklearnModel)
	p := startReady(t, Options{ModelDir: dir, Name: "iris-sklearn", Version: "v7"})
	base := p.url

	want := pythonJSON(t, `
import json, pickle, sys
with open(sys.argv[1], "rb") as f:
    model = pickle.load(f)
print(json.dumps(model.predict(json.loads(sys.argv[2])).tolist()))
`, filepath.Join(dir, "model.pkl"), mustJSON(t, irisRows))

	t.Run("v1 predict", func(t *testing.T) {
		code, out := call(t, "POST", base+"/v1/models/iris-sklearn:predict", mustJSON(t, map[string]any{"instances": irisRows}))
		if code != 200 || !reflect.DeepEqual(out["predictions"], want) {
			t.Fatalf("%d %v, want predictions %v", code, out, want)
		}
		code, out = call(t, "POST", base+"/v1/models/iris-sklearn:predict", mustJSON(t, map[string]any{"inputs": irisRows[:1]}))
		if code != 200 || !reflect.DeepEqual(out["predictions"], want.([]any)[:1]) {
			t.Fatalf(`"inputs": %d %v`, code, out)
		}
	})
	t.Run("v1 status", func(t *testing.T) {
		code, out := call(t, "GET", base+"/v1/models/iris-sklearn", "")
		if code != 200 || out["name"] != "iris-sklearn" || out["ready"] != true {
			t.Fatalf("%d %v", code, out)
		}
	})
	t.Run("v2 infer", func(t *testing.T) {
		var flat []float64
		for _, r := range irisRows {
			flat = append(flat, r...)
		}
		req := map[string]any{"id": "req-1", "inputs": []any{map[string]any{
			"name": "input-0", "shape": []int{len(irisRows), 4}, "datatype": "FP64", "data": flat}}}
		code, out := call(t, "POST", base+"/v2/models/iris-sklearn/infer", mustJSON(t, req))
		if code != 200 || out["model_name"] != "iris-sklearn" || out["model_version"] != "v7" || out["id"] != "req-1" {
			t.Fatalf("%d %v", code, out)
		}
		o := out["outputs"].([]any)[0].(map[string]any)
		if !reflect.DeepEqual(o["data"], want) || o["datatype"] != "INT64" ||
			!reflect.DeepEqual(o["shape"], []any{float64(len(irisRows))}) {
			t.Fatalf("outputs %v, want data %v", o, want)
		}
		// Nested data, versioned path.
		req["inputs"].([]any)[0].(map[string]any)["data"] = irisRows
		code, out = call(t, "POST", base+"/v2/models/iris-sklearn/versions/v7/infer", mustJSON(t, req))
		if code != 200 || !reflect.DeepEqual(out["outputs"].([]any)[0].(map[string]any)["data"], want) {
			t.Fatalf("nested: %d %v", code, out)
		}
	})
	t.Run("v2 metadata and health", func(t *testing.T) {
		code, out := call(t, "GET", base+"/v2/models/iris-sklearn", "")
		if code != 200 || out["name"] != "iris-sklearn" || !reflect.DeepEqual(out["versions"], []any{"v7"}) ||
			out["platform"] != "sklearn" || out["inputs"] == nil || out["outputs"] == nil {
			t.Fatalf("%d %v", code, out)
		}
		for _, path := range []string{"/v2/health/live", "/v2/health/ready", "/v2/models/iris-sklearn/ready"} {
			if code, out := call(t, "GET", base+path, ""); code != 200 {
				t.Errorf("%s: %d %v", path, code, out)
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			method, path, body string
			code               int
			msg                string
		}{
			{"POST", "/v1/models/other:predict", `{"instances": [[1,2,3,4]]}`, 404, `model "other" not found`},
			{"GET", "/v1/models/other", "", 404, "not found"},
			{"POST", "/v2/models/other/infer", `{"inputs": []}`, 404, "not found"},
			{"GET", "/v2/models/iris-sklearn/versions/v1", "", 404, `no version "v1"`},
			{"POST", "/v1/models/iris-sklearn:predict", `{"instances": [[1,2,3,4]`, 400, "not valid JSON"},
			{"POST", "/v1/models/iris-sklearn:predict", ``, 400, "empty request body"},
			{"POST", "/v1/models/iris-sklearn:predict", `{"rows": [[1,2,3,4]]}`, 400, `"instances"`},
			{"POST", "/v1/models/iris-sklearn:predict", `{"instances": [[1,2,3]]}`, 400, "expects 4"},
			{"POST", "/v1/models/iris-sklearn:predict", `{"instances": [1,2,3,4]}`, 400, "2-D"},
			{"POST", "/v1/models/iris-sklearn:predict", `{"instances": [[1,2,3,4],[1]]}`, 400, "rectangular"},
			{"POST", "/v2/models/iris-sklearn/infer", `{"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1,2,3,4]}]}`, 400, "needs 8 values"},
			{"POST", "/v2/models/iris-sklearn/infer", `{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1,2,3,4]}]}`, 400, "unknown datatype"},
			{"POST", "/v2/models/iris-sklearn/infer", `{"inputs": {}}`, 400, "non-empty list"},
			{"POST", "/v1/models/iris-sklearn:predict", `{"instances": [["a","b","c","d"]]}`, 400, "the model cannot use this input"},
			{"POST", "/v2/models/iris-sklearn/infer", `{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a","b","c","d"]}]}`, 400, "the model cannot use this input"},
			{"POST", "/v2/models/iris-sklearn/infer", `{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1,2,3,4]}], "outputs": [{"name": "proba"}]}`, 400, `unknown output "proba"`},
			{"POST", "/v1/models/iris-sklearn:explain", `{"instances": [[1,2,3,4]]}`, 501, "no explainer"},
			{"GET", "/v1/models/iris-sklearn:predict", "", 405, "use POST"},
			{"POST", "/v2/health/ready", "{}", 405, "use GET"},
			{"GET", "/v3/nothing", "", 404, "no such endpoint"},
		} {
			code, out := call(t, tc.method, base+tc.path, tc.body)
			msg, _ := out["error"].(string)
			if code != tc.code || !strings.Contains(msg, tc.msg) {
				t.Errorf("%s %s %s: %d %q, want %d containing %q", tc.method, tc.path, tc.body, code, msg, tc.code, tc.msg)
			}
		}
	})
	t.Run("nesting bomb", func(t *testing.T) {
		// Nested far deeper than Python's recursion limit, or than numpy's
		// dimensions: a 400 with a JSON error, no traceback in the log, and
		// the server keeps serving.
		for _, depth := range []int{100, 10000, 100000} {
			deep := strings.Repeat("[", depth) + strings.Repeat("]", depth)
			for _, tc := range []struct{ path, body string }{
				{"/v1/models/iris-sklearn:predict", `{"instances": ` + deep + `}`},
				{"/v2/models/iris-sklearn/infer", `{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ` + deep + `}]}`},
			} {
				code, out := call(t, "POST", base+tc.path, tc.body)
				if msg, _ := out["error"].(string); code != 400 || msg == "" {
					t.Errorf("%s nested %d deep: %d %v; want 400 with a JSON error", tc.path, depth, code, out)
				}
			}
		}
		if code, out := call(t, "POST", base+"/v1/models/iris-sklearn:predict", mustJSON(t, map[string]any{"instances": irisRows})); code != 200 || !reflect.DeepEqual(out["predictions"], want) {
			t.Fatalf("after the bombs: %d %v", code, out)
		}
		if log := p.output.String(); strings.Contains(log, "Traceback") || strings.Contains(log, "RecursionError") {
			t.Errorf("the server logged a traceback:\n%s", log)
		}
	})
	t.Run("chunked request body", func(t *testing.T) {
		body := io.MultiReader(strings.NewReader(`{"instances": `), strings.NewReader(mustJSON(t, irisRows)+`}`))
		resp, err := httpClient.Post(base+"/v1/models/iris-sklearn:predict", "application/json", body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 ||
			!reflect.DeepEqual(out["predictions"], want) {
			t.Fatalf("%d %v %v (TransferEncoding %v)", resp.StatusCode, out, err, resp.Request.TransferEncoding)
		}
	})
	t.Run("new connections after the daemon closed its listener copy", func(t *testing.T) {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for i := range 20 {
			resp, err := client.Get(base + "/v2/health/live")
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("connection %d: %s", i, resp.Status)
			}
		}
	})
}

// rawConn speaks HTTP/1.1 over one TCP connection.
type rawConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	return &rawConn{c: c, r: bufio.NewReader(c)}
}

// rawResp is a response read off a raw connection, body already consumed.
type rawResp struct {
	StatusCode int
	Status     string
	Header     http.Header
	Close      bool
}

func (rc *rawConn) read(t *testing.T) (rawResp, string) {
	t.Helper()
	resp, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return rawResp{resp.StatusCode, resp.Status, resp.Header, resp.Close}, string(b)
}

func predictRequest(path, body, extra string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s",
		path, extra, len(body), body)
}

// TestKeepAlive catches the delayed-ACK trap: a server that writes headers
// and body separately (without TCP_NODELAY) takes ~40 ms per keep-alive
// request, 8 s for 200; a correct one takes well under 1 ms each.
func TestKeepAlive(t *testing.T) {
	requirePython(t, "sklearn", "cloudpickle")
	dir := requireExample(t, sklearnModel)
	p := startReady(t, Options{ModelDir: dir, Name: "iris-sklearn", Version: "1"})
	rc := dialRaw(t, p.addr)
	req := predictRequest("/v1/models/iris-sklearn:predict", `{"instances": [[5.1, 3.5, 1.4, 0.2]]}`, "")
	// Warm up (first predict imports lazily inside sklearn).
	if _, err := io.WriteString(rc.c, req); err != nil {
		t.Fatal(err)
	}
	rc.read(t)
	const n = 200
	begin := time.Now()
	for i := range n {
		if _, err := io.WriteString(rc.c, req); err != nil {
			t.Fatal(err)
		}
		resp, body := rc.read(t)
		if resp.StatusCode != 200 || body != `{"predictions": [0]}` {
			t.Fatalf("request %d: %s %s", i, resp.Status, body)
		}
	}
	elapsed := time.Since(begin)
	t.Logf("%d sequential keep-alive predicts over one connection: %v (%v each)", n, elapsed, elapsed/n)
	if elapsed > 2*time.Second {
		t.Errorf("%d keep-alive requests took %v (> 2s): delayed-ACK trap (40 ms per request)?", n, elapsed)
	}

	t.Run("pipelining", func(t *testing.T) {
		health := "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
		if _, err := io.WriteString(rc.c, req+health+req+health); err != nil {
			t.Fatal(err)
		}
		for i, want := range []string{`{"predictions": [0]}`, `{"live": true}`, `{"predictions": [0]}`, `{"live": true}`} {
			resp, body := rc.read(t)
			if resp.StatusCode != 200 || body != want {
				t.Fatalf("response %d: %s %q, want %q", i, resp.Status, body, want)
			}
		}
	})
	t.Run("split writes", func(t *testing.T) {
		for _, part := range []string{req[:10], req[10 : len(req)-5], req[len(req)-5:]} {
			if _, err := io.WriteString(rc.c, part); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if resp, body := rc.read(t); resp.StatusCode != 200 || body != `{"predictions": [0]}` {
			t.Fatalf("%s %s", resp.Status, body)
		}
	})
	t.Run("Connection: close", func(t *testing.T) {
		if _, err := io.WriteString(rc.c, predictRequest("/v1/models/iris-sklearn:predict",
			`{"instances": [[5.1, 3.5, 1.4, 0.2]]}`, "Connection: close\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, body := rc.read(t)
		if resp.StatusCode != 200 || !resp.Close || body != `{"predictions": [0]}` {
			t.Fatalf("%s close=%v %s", resp.Status, resp.Close, body)
		}
		if n, err := rc.r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("connection still open after Connection: close (read %d, %v)", n, err)
		}
	})
}

// ------------------------------------------------------------------ xgboost --

func TestXGBoost(t *testing.T) {
	requirePython(t, "xgboost", "sklearn")
	t.Parallel()
	dir := requireExample(t, xgboostModel)
	p := startReady(t, Options{ModelDir: dir, Name: "iris-xgboost", Version: "3"})

	want := pythonJSON(t, `
import json, sys
import numpy as np, xgboost
model = xgboost.XGBClassifier()
model.load_model(sys.argv[1])
print(json.dumps(model.predict(np.asarray(json.loads(sys.argv[2]))).tolist()))
`, filepath.Join(dir, "model.ubj"), mustJSON(t, irisRows))

	var flat []float64
	for _, r := range irisRows {
		flat = append(flat, r...)
	}
	for _, dt := range []string{"FP32", "FP64"} {
		req := map[string]any{"id": dt, "inputs": []any{map[string]any{
			"name": "input-0", "shape": []int{len(irisRows), 4}, "datatype": dt, "data": flat}}}
		code, out := call(t, "POST", p.url+"/v2/models/iris-xgboost/infer", mustJSON(t, req))
		if code != 200 || out["id"] != dt || out["model_version"] != "3" {
			t.Fatalf("%s: %d %v", dt, code, out)
		}
		o := out["outputs"].([]any)[0].(map[string]any)
		if !reflect.DeepEqual(o["data"], want) || !reflect.DeepEqual(o["shape"], []any{float64(len(irisRows))}) {
			t.Fatalf("%s: outputs %v, want data %v", dt, o, want)
		}
	}
	code, out := call(t, "POST", p.url+"/v1/models/iris-xgboost:predict", mustJSON(t, map[string]any{"instances": irisRows}))
	if code != 200 || !reflect.DeepEqual(out["predictions"], want) {
		t.Fatalf("v1: %d %v, want %v", code, out, want)
	}
	code, out = call(t, "POST", p.url+"/v2/models/iris-xgboost/infer",
		`{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}`)
	if code != 400 || !strings.Contains(out["error"].(string), "expects 4") {
		t.Fatalf("3 features: %d %v", code, out)
	}
}

// ------------------------------------------------------------------- pyfunc --

// pyfuncModel writes a python_function model with loader_module + code: it
// predicts row sums times a scale read from its data dir, and sleeps -x
// seconds when the first value x is negative (touching data/started first).
func pyfuncModel(t *testing.T) string {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"MLmodel": `artifact_path: model
flavors:
  python_function:
    code: code
    data: data
    loader_module: scaledsum
    python_version: 3.11.2
mlflow_version: 2.12.2
`,
		"data/scale.txt": "2\n",
		"code/scaledsum.py": `import os
import time

import numpy as np


class ScaledSum:
    def __init__(self, path):
        with open(os.path.join(path, "scale.txt")) as f:
            self.scale = float(f.read())
        self.marker = os.path.join(path, "started")

    def predict(self, x):
        x = np.asarray(x, dtype=float)
        if x.size and x.flat[0] < 0:
            open(self.marker, "w").close()
            time.sleep(-x.flat[0])
        return x.sum(axis=1) * self.scale


def _load_pyfunc(path):
    return ScaledSum(path)
`,
	})
	return dir
}

func TestPyfuncLoaderModule(t *testing.T) {
	requirePython(t)
	t.Parallel()
	dir := pyfuncModel(t)
	p := startReady(t, Options{ModelDir: dir, Name: "scaled", Version: "1"})
	code, out := call(t, "POST", p.url+"/v1/models/scaled:predict", `{"instances": [[1, 2], [3, 4.5]]}`)
	if code != 200 || !reflect.DeepEqual(out["predictions"], []any{6.0, 15.0}) {
		t.Fatalf("%d %v", code, out)
	}
	code, out = call(t, "POST", p.url+"/v2/models/scaled/infer",
		`{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}]}`)
	o := out["outputs"].([]any)[0].(map[string]any)
	if code != 200 || !reflect.DeepEqual(o["data"], []any{6.0, 14.0}) || o["datatype"] != "FP64" {
		t.Fatalf("%d %v", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "code", "__pycache__")); err == nil {
		t.Errorf("the server wrote __pycache__ into the (content-addressed) model directory")
	}
}

func TestPythonModelPickle(t *testing.T) {
	requirePython(t, "cloudpickle")
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"artifacts/n.txt": "10",
		"MLmodel": `artifact_path: model
flavors:
  python_function:
    artifacts:
      n:
        path: artifacts/n.txt
        uri: /somewhere/n.txt
    cloudpickle_version: 2.2.0
    code: null
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.pyfunc.model
    python_model: python_model.pkl
    python_version: 3.11.2
mlflow_version: 2.12.2
`,
	})
	// Pickle a PythonModel subclass the way mlflow.pyfunc.save_model does
	// (cloudpickle, class by value), against a stand-in mlflow module.
	pythonJSON(t, `
import sys, types, cloudpickle
mlflow, pyfunc, model = (types.ModuleType(n) for n in ("mlflow", "mlflow.pyfunc", "mlflow.pyfunc.model"))
class PythonModel:
    def load_context(self, context):
        pass
PythonModel.__module__ = "mlflow.pyfunc.model"
model.PythonModel = pyfunc.PythonModel = PythonModel
pyfunc.model, mlflow.pyfunc = model, pyfunc
sys.modules.update({"mlflow": mlflow, "mlflow.pyfunc": pyfunc, "mlflow.pyfunc.model": model})

class AddN(PythonModel):
    def load_context(self, context):
        with open(context.artifacts["n"]) as f:
            self.n = int(f.read())
    def predict(self, context, model_input, params=None):
        return [float(sum(row)) + self.n for row in model_input]

with open(sys.argv[1], "wb") as f:
    cloudpickle.dump(AddN(), f)
print("{}")
`, filepath.Join(dir, "python_model.pkl"))
	p := startReady(t, Options{ModelDir: dir, Name: "addn", Version: "1"})
	code, out := call(t, "POST", p.url+"/v1/models/addn:predict", `{"instances": [[1, 2], [3, 4]]}`)
	if code != 200 || !reflect.DeepEqual(out["predictions"], []any{13.0, 17.0}) {
		t.Fatalf("%d %v", code, out)
	}
}

// ------------------------------------------------------------------ pytorch --

func TestPytorch(t *testing.T) {
	requirePython(t, "torch")
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"MLmodel": `artifact_path: model
flavors:
  python_function:
    data: data
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.pytorch
    pickle_module_name: mlflow.pytorch.pickle_module
    python_version: 3.11.2
  pytorch:
    code: null
    model_data: data
    pytorch_version: 1.13.1
mlflow_version: 2.12.2
`,
	})
	rows := mustJSON(t, irisRows)
	want := pythonJSON(t, `
import json, os, sys
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
os.makedirs(os.path.join(sys.argv[1], "data"), exist_ok=True)
torch.save(model, os.path.join(sys.argv[1], "data", "model.pth"))
model.eval()
with torch.no_grad():
    out = model(torch.tensor(json.loads(sys.argv[2]), dtype=torch.float32))
print(json.dumps(out.numpy().tolist()))
`, dir, rows)
	p := startReady(t, Options{ModelDir: dir, Name: "torchy", Version: "1"})
	code, out := call(t, "POST", p.url+"/v1/models/torchy:predict", `{"instances": `+rows+`}`)
	if code != 200 {
		t.Fatalf("%d %v", code, out)
	}
	assertClose(t, out["predictions"], want)
	code, out = call(t, "POST", p.url+"/v2/models/torchy/infer",
		`{"inputs": [{"name": "x", "shape": [`+strconv.Itoa(len(irisRows))+`, 4], "datatype": "FP32", "data": `+rows+`}]}`)
	o := out["outputs"].([]any)[0].(map[string]any)
	if code != 200 || o["datatype"] != "FP32" || !reflect.DeepEqual(o["shape"], []any{float64(len(irisRows)), 3.0}) {
		t.Fatalf("%d %v", code, out)
	}
	var flat []any
	for _, r := range want.([]any) {
		flat = append(flat, r.([]any)...)
	}
	assertClose(t, o["data"], flat)
	// Strings are the client's mistake, not the model's failure.
	code, out = call(t, "POST", p.url+"/v2/models/torchy/infer",
		`{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}`)
	if msg, _ := out["error"].(string); code != 400 || !strings.Contains(msg, "numeric tensors") {
		t.Errorf("BYTES tensor: %d %v; want 400", code, out)
	}
	if code, out = call(t, "GET", p.url+"/v2/models/torchy", ""); code != 200 || out["platform"] != "pytorch" {
		t.Errorf("metadata: %d %v; want platform pytorch", code, out)
	}
}

func assertClose(t *testing.T, got, want any) {
	t.Helper()
	var walk func(g, w any) bool
	walk = func(g, w any) bool {
		switch w := w.(type) {
		case []any:
			g, ok := g.([]any)
			if !ok || len(g) != len(w) {
				return false
			}
			for i := range w {
				if !walk(g[i], w[i]) {
					return false
				}
			}
			return true
		case float64:
			g, ok := g.(float64)
			return ok && math.Abs(g-w) <= 1e-5*(1+math.Abs(w))
		}
		return reflect.DeepEqual(g, w)
	}
	if !walk(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// ------------------------------------------------------------ load failures --

func TestLoadFailures(t *testing.T) {
	requirePython(t)
	t.Parallel()
	for _, tc := range []struct {
		name  string
		files map[string]string
		code  int
		msg   string
	}{
		{"tensorflow", map[string]string{"MLmodel": `flavors:
  python_function:
    env: conda.yaml
    loader_module: mlflow.tensorflow
    python_version: 3.11.2
  tensorflow:
    code: null
    model_type: tf2-module
    saved_model_dir: tfmodel
mlflow_version: 2.12.2
`}, ExitNoRuntime, `merlin: no local runtime for flavor "tensorflow" (model `},
		{"onnx", map[string]string{"MLmodel": "flavors:\n  onnx:\n    data: model.onnx\n"}, ExitNoRuntime,
			`no local runtime for flavor "onnx"`},
		{"missing package", map[string]string{
			"MLmodel":          "flavors:\n  python_function:\n    loader_module: needsdep\n    code: code\n",
			"code/needsdep.py": "import merlin_no_such_package\n",
		}, ExitMissingPackage, `merlin: python package "merlin_no_such_package" is missing`},
		{"no MLmodel", map[string]string{"model.pkl": "x"}, 1, "merlin: MLmodel not found in "},
		{"broken pickle", map[string]string{
			"MLmodel":   "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: pickle\n",
			"model.pkl": "not a pickle",
		}, 1, "merlin: cannot unpickle sklearn model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "broken pickle" {
				requirePython(t, "sklearn")
			}
			t.Parallel()
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			p := start(t, Options{ModelDir: dir})
			if code := p.wait(t, 60*time.Second); code != tc.code {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, tc.code, p.output)
			}
			out := strings.TrimSpace(p.output.String())
			if !strings.Contains(out, tc.msg) || strings.Count(out, "\n") != 0 {
				t.Fatalf("output %q, want one line containing %q", out, tc.msg)
			}
		})
	}
	t.Run("testdata langchain", func(t *testing.T) {
		t.Parallel()
		dir, _ := filepath.Abs("../../../testdata/mlflow/example_mlflow_2.12_langchain_model")
		if _, err := os.Stat(filepath.Join(dir, "MLmodel")); err != nil {
			t.Fatalf("testdata missing: %v", err)
		}
		p := start(t, Options{ModelDir: dir})
		if code := p.wait(t, 60*time.Second); code != ExitNoRuntime || !strings.Contains(p.output.String(), `flavor "langchain"`) {
			t.Fatalf("exit %d: %s", code, p.output)
		}
	})
}

// TestMLmodelParsing reads every real MLmodel sample and the examples with
// the server's mlmodel module (PyYAML's safe_load) and checks the result, the
// signatures, and the one-line errors for what is not an MLmodel.
func TestMLmodelParsing(t *testing.T) {
	requirePython(t, "yaml")
	t.Parallel()
	pkg, err := Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, root := range []string{"../../../testdata/mlflow", "../../../examples"} {
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (d.Name() == "MLmodel" || strings.HasSuffix(d.Name(), ".yaml")) {
				files = append(files, path)
			}
			return nil
		})
	}
	if len(files) == 0 {
		t.Skip("no MLmodel files found")
	}
	res := pythonJSON(t, `
import json, os, sys
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import yaml
from merlin_modelserver import mlmodel
from merlin_modelserver.errors import LoadError
bad = []
mlmodels = 0
for path in sys.argv[2:]:
    text = open(path).read()
    try:
        mine = mlmodel.parse(text)
        if os.path.basename(path) == "MLmodel":
            mlmodels += 1
            if mlmodel.read(os.path.dirname(path)) != mine or not isinstance(mine.get("flavors"), dict):
                bad.append(path + ": no flavors")
            sig = mine.get("signature")
            got = mlmodel.signature(mine)
            if isinstance(sig, dict) and sig.get("inputs") and not isinstance(got.get("inputs"), list):
                bad.append(path + ": signature inputs not decoded")
    except Exception as e:
        mine = "error: %r" % e
    if mine != yaml.safe_load(text):
        bad.append(path)
for text in ("flavors: [", "- a\n- b\n", "", "a: *x\n", "flavors: !!python/object:os.system x\n"):
    try:
        mlmodel.parse(text)
        bad.append("parsed %r" % text)
    except LoadError as e:
        if "\n" in str(e) or "MLmodel" not in str(e):
            bad.append("error %r" % str(e))
print(json.dumps({"bad": bad, "mlmodels": mlmodels}))
`, append([]string{pkg}, files...)...)
	m := res.(map[string]any)
	if bad := m["bad"].([]any); len(bad) != 0 {
		t.Fatalf("MLmodel parsing: %v", bad)
	}
	if m["mlmodels"].(float64) == 0 {
		t.Fatalf("no MLmodel among %v", files)
	}
	t.Logf("%d YAML files (%v MLmodel) parse like PyYAML", len(files), m["mlmodels"])
}

// TestPythonUnit runs the package's Python unit tests (pytests/, not
// embedded) against the installed package: configuration, MLmodel, the V1/V2
// protocol, HTTP framing with one write per batch of responses, and the ways
// to start the server.
func TestPythonUnit(t *testing.T) {
	requirePython(t)
	t.Parallel()
	pkg, err := Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests, err := filepath.Abs("pytests")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, DefaultPython, "-B", "-m", "unittest", "discover", "-v", "-s", tests, "-t", tests)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Dir(pkg), "OMP_NUM_THREADS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python unit tests: %v\n%s", err, out)
	}
	t.Logf("%s", lastLine(strings.TrimSuffix(strings.TrimSpace(string(out)), "OK")))
	_ = filepath.WalkDir(pkg, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "__pycache__" {
			t.Errorf("bytecode written into the package: %s", p)
		}
		return err
	})
}

// --------------------------------------------------------------- lifecycle --

func TestSIGTERMFinishesInFlightRequest(t *testing.T) {
	requirePython(t)
	t.Parallel()
	dir := pyfuncModel(t)
	p := startReady(t, Options{ModelDir: dir, Name: "scaled", Version: "1"})
	type result struct {
		code int
		out  map[string]any
		err  error
	}
	res := make(chan result, 1)
	go func() {
		code, out, err := tryCall(t.Context(), "POST", p.url+"/v1/models/scaled:predict", `{"instances": [[-1.5, 0.5]]}`)
		res <- result{code, out, err}
	}()
	// Wait until the (1.5 s) prediction is running.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "data", "started")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("prediction did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatalf("in-flight request: %v", r.err)
	}
	if r.code != 200 || !reflect.DeepEqual(r.out["predictions"], []any{-2.0}) {
		t.Fatalf("in-flight request: %d %v", r.code, r.out)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("still accepting connections after SIGTERM")
	}
}

func children(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func TestWorkers(t *testing.T) {
	requirePython(t, "sklearn", "cloudpickle")
	t.Parallel()
	dir := requireExample(t, sklearnModel)
	p := startReady(t, Options{ModelDir: dir, Name: "iris", Version: "1", Workers: 2})
	// The supervisor forks its workers right after it reports ready.
	kids := children(p.cmd.Process.Pid)
	for deadline := time.Now().Add(10 * time.Second); len(kids) != 2 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		kids = children(p.cmd.Process.Pid)
	}
	if len(kids) != 2 {
		t.Fatalf("want 2 worker processes, have %v", kids)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	for range 40 {
		wg.Go(func() {
			code, out, err := tryCall(t.Context(), "POST", p.url+"/v1/models/iris:predict", `{"instances": [[6.3, 3.3, 6.0, 2.5]]}`)
			if err != nil || code != 200 || !reflect.DeepEqual(out["predictions"], []any{2.0}) {
				errs <- fmt.Sprintf("%d %v %v", code, out, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// A crashed worker is replaced.
	_ = syscall.Kill(kids[0], syscall.SIGKILL)
	deadline := time.Now().Add(15 * time.Second)
	for {
		now := children(p.cmd.Process.Pid)
		if len(now) == 2 && !slices.Contains(now, kids[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not replaced: %v", now)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, out := call(t, "GET", p.url+"/v1/models/iris", ""); code != 200 {
		t.Fatalf("%d %v", code, out)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	for _, k := range children(p.cmd.Process.Pid) {
		t.Errorf("worker %d survived", k)
	}
}

// fileString prints a file's content with %s.
type fileString string

func (f fileString) String() string {
	b, _ := os.ReadFile(string(f))
	return string(b)
}

// gone reports whether pid has exited (a zombie counts: its reaper is not us).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || strings.HasPrefix(s[i+1:], " Z") || strings.HasPrefix(s[i+1:], " X")
}

// TestOrphan runs the server under a shell that then exits, as when the
// daemon is killed with -9: the server keeps serving while it gets requests,
// and exits by itself once orphaned and idle for --orphan-timeout.
func TestOrphan(t *testing.T) {
	requirePython(t)
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			t.Parallel()
			dir := pyfuncModel(t)
			script, err := Install(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f, _ := ln.(*net.TCPListener).File()
			inner := Command(script, Options{ModelDir: dir, Name: "scaled", Version: "1", Workers: workers,
				OrphanTimeout: time.Second}, f)
			// sh starts the server in the background, prints its pid and
			// waits for stdin to close before exiting. The server's output
			// goes to a file: a pipe would keep sh.Wait waiting for it.
			sh := exec.Command("/bin/sh", append([]string{"-c", `"$@" >&2 & echo $!; read _; exit 0`, "sh"}, inner.Args...)...)
			sh.ExtraFiles = inner.ExtraFiles
			sh.SysProcAttr = inner.SysProcAttr
			stdin, _ := sh.StdinPipe()
			stdout, _ := sh.StdoutPipe()
			logFile, err := os.Create(filepath.Join(t.TempDir(), "server.log"))
			if err != nil {
				t.Fatal(err)
			}
			defer logFile.Close()
			sh.Stderr = logFile
			output := fileString(logFile.Name())
			if err := sh.Start(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			ln.Close()
			t.Cleanup(func() {
				_ = syscall.Kill(-sh.Process.Pid, syscall.SIGKILL)
				_ = sh.Wait()
			})
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil {
				t.Fatal(err)
			}
			p := &proc{addr: ln.Addr().String(), url: "http://" + ln.Addr().String(), output: &testlog.Buffer{},
				done: make(chan struct{})}
			p.waitReady(t)
			stdin.Close() // the "daemon" dies
			if err := sh.Wait(); err != nil {
				t.Fatalf("sh: %v", err)
			}
			// Requests keep it alive well past the timeout.
			client := &http.Client{Timeout: 5 * time.Second}
			for range 10 {
				resp, err := client.Get(p.url + "/v2/health/ready")
				if err != nil {
					t.Fatalf("orphaned server stopped serving: %v\n%s", err, output)
				}
				resp.Body.Close()
				time.Sleep(300 * time.Millisecond)
			}
			if gone(pid) {
				t.Fatalf("orphaned server exited while receiving requests:\n%s", output)
			}
			deadline := time.Now().Add(20 * time.Second)
			for !gone(pid) {
				if time.Now().After(deadline) {
					t.Fatalf("orphaned idle server %d still running after 20s:\n%s", pid, output)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if workers > 1 {
				time.Sleep(200 * time.Millisecond)
			}
			if !strings.Contains(output.String(), "orphaned") {
				t.Errorf("no orphan message in output:\n%s", output)
			}
		})
	}
}

// BenchmarkPredict measures single-row iris predicts through Go's HTTP client,
// as the router sends them: go test -run NONE -bench Predict -benchtime 5s.
func BenchmarkPredict(b *testing.B) {
	if _, err := exec.Command(DefaultPython, "-c", "import numpy, yaml, sklearn, cloudpickle").CombinedOutput(); err != nil {
		b.Skipf("SKIPPING: %s cannot import sklearn: %v", DefaultPython, err)
	}
	dir, err := filepath.Abs(sklearnModel)
	if err != nil {
		b.Fatal(err)
	}
	script, err := Install(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for _, workers := range []int{1, 2} {
		url := benchServer(b, script, dir, workers)
		for _, conc := range []int{1, 8} {
			b.Run(fmt.Sprintf("workers=%d/concurrency=%d", workers, conc), func(b *testing.B) {
				benchPredict(b, url, conc)
			})
		}
	}
}

func benchServer(b *testing.B, script, dir string, workers int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	f, _ := ln.(*net.TCPListener).File()
	cmd := Command(script, Options{ModelDir: dir, Name: "iris", Version: "1", Workers: workers}, f)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	ln.Close()
	b.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	url := "http://" + ln.Addr().String()
	for deadline := time.Now().Add(60 * time.Second); ; {
		resp, err := http.Get(url + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("server not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func benchPredict(b *testing.B, url string, conc int) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	defer client.CloseIdleConnections()
	body := []byte(`{"instances": [[5.1, 3.5, 1.4, 0.2]]}`)
	predict := func() error {
		resp, err := client.Post(url+"/v1/models/iris:predict", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %s", resp.Status)
		}
		return err
	}
	var (
		next = make(chan struct{})
		wg   sync.WaitGroup
		errs = make(chan error, conc)
	)
	for range conc {
		wg.Go(func() {
			for range next {
				if err := predict(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range 10 * conc { // open and warm up the connections
		next <- struct{}{}
	}
	b.ResetTimer()
	begin := time.Now()
	for range b.N {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(begin).Seconds(), "req/s")
}

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Purpose-made models for rollout scenarios. Good versions are the iris
// example retrained (train.py --seed/--c); bad ones are MLflow pyfunc
// models whose loader module (written next to them) wraps a good iris
// model and misbehaves on purpose: every prediction fails with HTTP 500,
// or sleeps, or silently returns a wrong label for about a fifth of the
// inputs.

// Misbehaviours of a purpose-made model.
const (
	kindCrash = "crash" // every prediction raises: HTTP 500
	kindSlow  = "slow"  // every prediction sleeps 200 ms
	kindWrong = "wrong" // ~20% of rows get another label, silently
)

// testModelPy is the loader module of the purpose-made pyfunc models. The
// rows it corrupts are chosen by a hash of their bytes, so the same input
// is always wrong (like a real bug) and about `wrong` of the iris rows are.
const testModelPy = `"""Purpose-made misbehaving model for Merlin's rollout tests."""
import json
import os
import time
import zlib

import cloudpickle
import numpy as np


class Model:
    def __init__(self, path):
        with open(os.path.join(path, "behaviour.json")) as f:
            b = json.load(f)
        self.kind = b["kind"]
        self.delay = b.get("delay", 0.0)
        self.wrong = b.get("wrong", 0.0)
        with open(os.path.join(path, "model.pkl"), "rb") as f:
            self.model = cloudpickle.load(f)

    def predict(self, x):
        if self.kind == "crash":
            raise RuntimeError("purpose-made failure")
        if self.kind == "slow":
            time.sleep(self.delay)
        x = np.asarray(x, dtype=np.float64)
        y = np.array(self.model.predict(x))
        if self.kind == "wrong":
            for i, row in enumerate(x):
                if zlib.crc32(np.ascontiguousarray(row).tobytes()) % 1000 < self.wrong * 1000:
                    y[i] = (y[i] + 1) % 3
        return y


def _load_pyfunc(path):
    return Model(path)
`

// badModel writes a pyfunc model directory that wraps the sklearn model in
// goodDir (an MLflow model directory) and misbehaves as kind says.
func badModel(t testing.TB, goodDir, kind string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), kind+"-model")
	behaviour := map[string]any{"kind": kind}
	switch kind {
	case kindCrash:
	case kindSlow:
		behaviour["delay"] = 0.2
	case kindWrong:
		behaviour["wrong"] = 0.2
	default:
		t.Fatalf("unknown misbehaviour %q", kind)
	}
	pkl, err := os.ReadFile(filepath.Join(goodDir, "model.pkl"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(behaviour)
	mlmodel := `# A purpose-made misbehaving model (Merlin e2e tests).
flavors:
  python_function:
    loader_module: merlin_testmodel
    code: code
`
	files := map[string]string{
		"MLmodel": mlmodel, "model.pkl": string(pkl), "behaviour.json": string(b) + "\n",
		"code/merlin_testmodel.py": testModelPy,
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// irisSpec is one retrained iris model.
type irisSpec struct {
	Seed int     `json:"seed"`
	C    float64 `json:"c"`
	Out  string  `json:"out"`
}

// trainIris retrains the iris example once per spec, in one Python process
// (importing scikit-learn once), and returns the MLflow model directories.
func trainIris(t testing.TB, specs ...irisSpec) []string {
	t.Helper()
	base := t.TempDir()
	dirs := make([]string, len(specs))
	for i := range specs {
		specs[i].Out = filepath.Join(base, fmt.Sprintf("iris-%d-%g", specs[i].Seed, specs[i].C))
		dirs[i] = specs[i].Out
	}
	in, _ := json.Marshal(specs)
	script := `import json, sys
sys.path.insert(0, sys.argv[1])
import train
for s in json.loads(sys.argv[2]):
    sys.argv = ["train.py", "--out", s["out"], "--seed", str(s["seed"]), "--c", str(s["c"])]
    train.main()`
	out, err := exec.Command("/usr/bin/python3", "-c", script, examplesDir(model), string(in)).CombinedOutput()
	if err != nil {
		t.Fatalf("train iris: %v\n%s", err, out)
	}
	return dirs
}

// Rollout settings used by the scenarios: 5 s steps (the minimum), two
// failed checks to roll back, and a bar every good retrained iris model
// clears (they agree with each other on ≥ 98% of the iris rows).
//
// The latency ratio (1.5) is judged in the bad-version scenarios and in
// BenchmarkRollback, which counts the good versions it rolls back: at 1–5
// ms latencies on a busy 2-CPU machine it fails a good version now and
// then. The good-path scenarios test the rollout's mechanics, so they
// leave the ratio loose and do not flake; for the same reason their
// absolute p99 bound is loose too (a 150 ms p99 failed a good canary
// while CI shared the machine with other test runs).
const (
	canaryYAML     = canarySteps + "    analysis: {" + analysisFlow + ", maxLatencyRatio: 1.5}\n"
	goodCanaryYAML = canarySteps + "    analysis: {" + goodAnalysisFlow + ", maxLatencyRatio: 100}\n"
	manualYAML     = goodCanaryYAML + "    promotion: manual\n"
	shadowYAML     = "    strategy: shadow\n    interval: 5s\n    analysis: {" + analysisFlow + ", maxLatencyRatio: 1.5}\n"

	canarySteps      = "    strategy: canary\n    steps: [10, 50, 100]\n    interval: 5s\n"
	analysisFlow     = "minRequests: 20, maxErrorRate: 1%, maxLatencyP99: 150ms, minAgreement: 90%, failureLimit: 2"
	goodAnalysisFlow = "minRequests: 20, maxErrorRate: 1%, maxLatencyP99: 5s, minAgreement: 90%, failureLimit: 2"
)

// modelSource stages a model directory and its merlin.yaml, ready for
// gittest.Repo.CommitDir.
func modelSource(t testing.TB, name, typ, modelDir, rollout string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-r", modelDir, filepath.Join(dir, "model")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	manifest := fmt.Sprintf(`apiVersion: merlin.dev/v1
kind: Model
metadata:
  name: %s
spec:
  type: %s
  source:
    path: ./model
  rollout:
%s`, name, typ, rollout)
	if err := os.WriteFile(filepath.Join(dir, "merlin.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

var (
	irisOnce sync.Once
	irisData [][]float64
	irisErr  error
)

// irisInputs returns the 150 rows of the iris data set, as Python has them.
func irisInputs(t testing.TB) [][]float64 {
	t.Helper()
	irisOnce.Do(func() {
		out, err := exec.Command("/usr/bin/python3", "-c",
			"import json; from sklearn.datasets import load_iris; print(json.dumps(load_iris().data.tolist()))").Output()
		if err != nil {
			irisErr = fmt.Errorf("load iris: %w", err)
			return
		}
		irisErr = json.Unmarshal(out, &irisData)
	})
	if irisErr != nil {
		t.Fatal(irisErr)
	}
	return irisData
}

// withAPIToken makes rollout commands need token (server.tokenEnv), which
// merlin reads from MERLIN_API_TOKEN.
func (m *merlinProc) withAPIToken(token string) {
	m.t.Helper()
	cfg, err := os.ReadFile(m.config)
	if err != nil {
		m.t.Fatal(err)
	}
	old := "server: {listen: " + strings.TrimPrefix(m.api, "http://") + "}"
	if !strings.Contains(string(cfg), old) {
		m.t.Fatalf("unexpected configuration:\n%s", cfg)
	}
	cfg = []byte(strings.Replace(string(cfg), old, strings.TrimSuffix(old, "}")+", tokenEnv: MERLIN_API_TOKEN}", 1))
	if err := os.WriteFile(m.config, cfg, 0o644); err != nil {
		m.t.Fatal(err)
	}
	m.env = append(m.env, "MERLIN_API_TOKEN="+token)
}

// withWorkers rewrites a merlin configuration to run n processes per
// model server (the slow model serves 5 requests a second per process).
func (m *merlinProc) withWorkers(n int) {
	m.t.Helper()
	cfg, err := os.ReadFile(m.config)
	if err != nil {
		m.t.Fatal(err)
	}
	old := "stateDir: " + m.stateDir + "}"
	if !strings.Contains(string(cfg), old) {
		m.t.Fatalf("unexpected configuration:\n%s", cfg)
	}
	cfg = []byte(strings.Replace(string(cfg), old, fmt.Sprintf("stateDir: %s, workers: %d}", m.stateDir, n), 1))
	if err := os.WriteFile(m.config, cfg, 0o644); err != nil {
		m.t.Fatal(err)
	}
}

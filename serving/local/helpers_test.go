package local

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/local/modelserver"
)

// requireSklearn skips (fails in CI) a test that needs real model servers
// when Debian's Python cannot import what the iris example needs.
func requireSklearn(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(modelserver.DefaultPython, "-c", "import numpy, sklearn, cloudpickle").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("%s cannot import sklearn (run hack/test-deps.sh): %v\n%s", modelserver.DefaultPython, err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING: " + msg)
	}
}

// irisModel is the iris example's MLflow model directory.
func irisModel(t *testing.T) string {
	t.Helper()
	model, err := filepath.Abs(filepath.Join("..", "..", "examples", "iris-sklearn", "model"))
	if err != nil {
		t.Fatal(err)
	}
	return model
}

// brokenModel is a copy of an MLflow model directory whose model file is
// not a pickle: its server exits at every start.
func brokenModel(t *testing.T, model string) string {
	t.Helper()
	bad := t.TempDir()
	mlmodel, err := os.ReadFile(filepath.Join(model, "MLmodel"))
	if err != nil {
		t.Fatal(err)
	}
	for f, data := range map[string][]byte{"MLmodel": mlmodel, "model.pkl": []byte("not a pickle")} {
		if err := os.WriteFile(filepath.Join(bad, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return bad
}

// testVersion is version n of a model served from bundle: versions with
// different n have different IDs.
func testVersion(name string, n int, bundle string) serving.Version {
	digest := fmt.Sprintf("%x", sha256.Sum256(fmt.Appendf(nil, "%s/%d", name, n)))
	return serving.Version{
		ID: serving.VersionID(name, digest), Model: name, Digest: digest,
		Type: manifest.TypeSKLearn, Protocol: manifest.ProtocolV1, Bundle: bundle,
		Replicas: manifest.Replicas{Min: 1, Max: 1},
	}
}

// newTestLocal starts a local target on dir, quietly and with short
// drain and stop timeouts.
func newTestLocal(t *testing.T, dir string) *Local {
	t.Helper()
	l, err := New(Options{
		StateDir: dir, DrainTimeout: time.Second, StopTimeout: 5 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

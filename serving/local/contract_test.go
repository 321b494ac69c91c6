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
	"merlin.dev/merlin/serving/servingtest"
)

// TestContract runs the shared target contract with real model servers:
// versions serve the iris example (an MLflow sklearn model), the broken
// version is an MLflow directory whose model file is not a pickle.
func TestContract(t *testing.T) {
	if out, err := exec.Command(modelserver.DefaultPython, "-c", "import numpy, sklearn, cloudpickle").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("%s cannot import sklearn (run hack/test-deps.sh): %v\n%s", modelserver.DefaultPython, err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING: " + msg)
	}
	model, err := filepath.Abs(filepath.Join("..", "..", "examples", "iris-sklearn", "model"))
	if err != nil {
		t.Fatal(err)
	}
	version := func(name string, n int, bundle string) serving.Version {
		digest := fmt.Sprintf("%x", sha256.Sum256(fmt.Appendf(nil, "%s/%d", name, n)))
		return serving.Version{
			ID: serving.VersionID(name, digest), Model: name, Digest: digest,
			Type: manifest.TypeSKLearn, Protocol: manifest.ProtocolV1, Bundle: bundle,
			Replicas: manifest.Replicas{Min: 1, Max: 1},
		}
	}
	servingtest.Run(t, servingtest.Harness{
		Eventually: 2 * time.Minute,
		Setup: func(t *testing.T) servingtest.Backend {
			dir := t.TempDir()
			var cur *Local
			t.Cleanup(func() {
				if cur != nil {
					cur.Close()
				}
			})
			return servingtest.Backend{
				// A restart: the previous target stops its servers, the
				// new one restores the deployments from the state dir.
				New: func(t *testing.T) serving.Target {
					if cur != nil {
						cur.Close()
					}
					l, err := New(Options{
						StateDir: dir, ReadyTimeout: 2 * time.Minute, DrainTimeout: time.Second, StopTimeout: 5 * time.Second,
						Logger: slog.New(slog.DiscardHandler),
					})
					if err != nil {
						t.Fatal(err)
					}
					cur = l
					return l
				},
				Version: func(_ *testing.T, name string, n int) serving.Version { return version(name, n, model) },
				Broken: func(t *testing.T, name string) serving.Version {
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
					return version(name, 999, bad)
				},
			}
		},
	})
}

package local

import (
	"testing"
	"time"

	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// TestContract runs the shared target contract with real model servers:
// versions serve the iris example (an MLflow sklearn model), the broken
// version is an MLflow directory whose model file is not a pickle.
func TestContract(t *testing.T) {
	requireSklearn(t)
	model := irisModel(t)
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
					cur = newTestLocal(t, dir)
					return cur
				},
				Version: func(_ *testing.T, name string, n int) serving.Version { return testVersion(name, n, model) },
				Broken:  func(t *testing.T, name string) serving.Version { return testVersion(name, 999, brokenModel(t, model)) },
			}
		},
	})
}

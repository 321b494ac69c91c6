package servingtest

import (
	"testing"
	"time"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
)

// TestMemoryContract holds the in-memory target to the contract the real
// targets pass, so that tests driving it mean something.
func TestMemoryContract(t *testing.T) {
	Run(t, Harness{
		Eventually: 5 * time.Second,
		Setup: func(*testing.T) Backend {
			mem := NewMemory()
			return Backend{
				New: func(*testing.T) serving.Target { return mem }, // a restart keeps the state, as a cluster does
				Version: func(_ *testing.T, model string, n int) serving.Version {
					return memVersion0(model, n)
				},
				Broken: func(_ *testing.T, model string) serving.Version {
					v := memVersion0(model, 999)
					mem.Break(v.ID, "model.pkl: not a pickle")
					return v
				},
			}
		},
	})
}

func memVersion0(model string, n int) serving.Version {
	digest := []byte("0123456789abcdef0123456789abcdef")
	digest[0] = "0123456789abcdef"[n%16]
	digest[1] = "0123456789abcdef"[n/16%16]
	return serving.Version{
		ID: serving.VersionID(model, string(digest)), Model: model, Digest: string(digest),
		Type: manifest.TypeSKLearn, Protocol: manifest.ProtocolV1, Replicas: manifest.Replicas{Min: 1, Max: 1},
	}
}

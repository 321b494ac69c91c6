// Package servingtest is the behaviour every serving.Target must have,
// written once and run against each implementation (like litestream's
// ReplicaClient suite):
//
//	func TestContract(t *testing.T) { servingtest.Run(t, harness) }
//
// The suite drives the target only through the serving.Target interface
// and checks what Status reports. Implementations differ in how a version
// becomes ready; the harness hides that: on the local target a version is
// a real model directory served by a real Python process (ready on its
// own) and a broken version is a directory the server cannot load; on the
// kubernetes target no KServe controller runs, so the harness plays its
// part and writes the InferenceServices' Ready conditions.
package servingtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/serving"
)

// Harness adapts one implementation to the suite.
type Harness struct {
	// Setup prepares an isolated backend for one test (a state directory,
	// a namespace) and returns it.
	Setup func(t *testing.T) Backend
	// Eventually bounds how long the suite waits for Status to show the
	// outcome of an Apply (a local server starting, a version draining).
	// Default 60s.
	Eventually time.Duration
}

// Backend is one test's view of an implementation.
type Backend struct {
	// New returns a target. Calls within one Setup share their backing
	// state (files, cluster), so a second call is a restarted daemon.
	New func(t *testing.T) serving.Target
	// Version returns a servable version n (0, 1, …) of model: versions
	// with different n have different IDs.
	Version func(t *testing.T, model string, n int) serving.Version
	// Broken returns a version of model that never becomes ready.
	Broken func(t *testing.T, model string) serving.Version
}

// Run runs the contract suite.
func Run(t *testing.T, h Harness) {
	if h.Eventually == 0 {
		h.Eventually = 60 * time.Second
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness, b Backend)
	}{
		{"ApplyOne", testApplyOne},
		{"Split", testSplit},
		{"Mirror", testMirror},
		{"NotReadyKeepsSplit", testNotReady},
		{"RemoveVersion", testRemoveVersion},
		{"Delete", testDelete},
		{"Restart", testRestart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, h, h.Setup(t))
		})
	}
}

func deploy(model string, traffic map[string]int, versions ...serving.Version) serving.Deployment {
	return serving.Deployment{Model: model, Versions: versions, Traffic: traffic}
}

func apply(t *testing.T, tg serving.Target, d serving.Deployment) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := tg.Apply(ctx, d); err != nil {
		t.Fatalf("apply %s: %v", d.Model, err)
	}
}

// want is the expected status of a model: version → weight (every listed
// version must be ready), nil meaning the model is gone.
type want map[string]int

// waitStatus polls Status until the model looks as wanted.
func waitStatus(t *testing.T, h Harness, tg serving.Target, model string, w want, mirror *serving.Mirror) serving.ModelStatus {
	t.Helper()
	deadline := time.Now().Add(h.Eventually)
	for {
		ms, problem := check(t, tg, model, w, mirror)
		if problem == "" {
			return ms
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s\nstatus: %+v", h.Eventually, problem, ms)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func check(t *testing.T, tg serving.Target, model string, w want, mirror *serving.Mirror) (serving.ModelStatus, string) {
	t.Helper()
	all, err := tg.Status(t.Context())
	if err != nil {
		return serving.ModelStatus{}, fmt.Sprintf("status: %v", err)
	}
	i := slices.IndexFunc(all, func(ms serving.ModelStatus) bool { return ms.Model == model })
	if w == nil {
		if i >= 0 && len(all[i].Versions) > 0 {
			return all[i], fmt.Sprintf("model %s still has versions", model)
		}
		return serving.ModelStatus{}, ""
	}
	if i < 0 {
		return serving.ModelStatus{}, fmt.Sprintf("model %s missing from status", model)
	}
	ms := all[i]
	var got []string
	for _, vs := range ms.Versions {
		got = append(got, vs.Version)
	}
	if len(got) != len(w) {
		return ms, fmt.Sprintf("versions %v, want %v", got, keys(w))
	}
	for _, vs := range ms.Versions {
		weight, ok := w[vs.Version]
		switch {
		case !ok:
			return ms, fmt.Sprintf("unexpected version %s", vs.Version)
		case vs.Weight != weight:
			return ms, fmt.Sprintf("%s has weight %d, want %d", vs.Version, vs.Weight, weight)
		case vs.State != serving.StateReady:
			return ms, fmt.Sprintf("%s is %s (%s), want ready", vs.Version, vs.State, vs.LastError)
		}
	}
	switch {
	case mirror == nil && ms.Mirror != nil && ms.Mirror.Percent > 0:
		return ms, fmt.Sprintf("mirror %+v, want none", *ms.Mirror)
	case mirror != nil && (ms.Mirror == nil || *ms.Mirror != *mirror):
		return ms, fmt.Sprintf("mirror %+v, want %+v", ms.Mirror, *mirror)
	}
	return ms, ""
}

func keys(w want) []string {
	var k []string
	for id := range w {
		k = append(k, id)
	}
	slices.Sort(k)
	return k
}

func testApplyOne(t *testing.T, h Harness, b Backend) {
	tg := b.New(t)
	v := b.Version(t, "iris", 0)
	apply(t, tg, deploy("iris", map[string]int{v.ID: 100}, v))
	ms := waitStatus(t, h, tg, "iris", want{v.ID: 100}, nil)
	if ms.Versions[0].Endpoint == "" {
		t.Errorf("version %s has no endpoint", v.ID)
	}
}

func testSplit(t *testing.T, h Harness, b Backend) {
	tg := b.New(t)
	v0, v1 := b.Version(t, "iris", 0), b.Version(t, "iris", 1)
	apply(t, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	apply(t, tg, deploy("iris", map[string]int{v0.ID: 90, v1.ID: 10}, v0, v1))
	waitStatus(t, h, tg, "iris", want{v0.ID: 90, v1.ID: 10}, nil)
	apply(t, tg, deploy("iris", map[string]int{v0.ID: 50, v1.ID: 50}, v0, v1))
	waitStatus(t, h, tg, "iris", want{v0.ID: 50, v1.ID: 50}, nil)
}

func testMirror(t *testing.T, h Harness, b Backend) {
	tg := b.New(t)
	v0, v1 := b.Version(t, "iris", 0), b.Version(t, "iris", 1)
	apply(t, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	d := deploy("iris", map[string]int{v0.ID: 100}, v0, v1)
	d.Mirror = &serving.Mirror{Version: v1.ID, Percent: 20}
	apply(t, tg, d)
	waitStatus(t, h, tg, "iris", want{v0.ID: 100, v1.ID: 0}, d.Mirror)
	// Dropping the shadow removes the mirror and the version.
	apply(t, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	waitStatus(t, h, tg, "iris", want{v0.ID: 100}, nil)
}

func testNotReady(t *testing.T, h Harness, b Backend) {
	tg := b.New(t)
	v0, bad := b.Version(t, "iris", 0), b.Broken(t, "iris")
	apply(t, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	waitStatus(t, h, tg, "iris", want{v0.ID: 100}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	err := tg.Apply(ctx, deploy("iris", map[string]int{v0.ID: 90, bad.ID: 10}, v0, bad))
	if !errors.Is(err, serving.ErrNotReady) {
		t.Fatalf("apply with a broken version: %v, want an error wrapping ErrNotReady", err)
	}
	t.Logf("apply with a broken version: %v", err)
	if !strings.Contains(err.Error(), bad.ID) {
		t.Errorf("error %q does not name the version %s", err, bad.ID)
	}
	// The old split stays: all traffic on v0; the broken version may be
	// reported (not ready, no traffic) until the next Apply removes it.
	all, err := tg.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, ms := range all {
		if ms.Model != "iris" {
			continue
		}
		for _, vs := range ms.Versions {
			switch {
			case vs.Version == v0.ID && vs.Weight != 100:
				t.Errorf("%s weight %d after a failed Apply, want 100", vs.Version, vs.Weight)
			case vs.Version == bad.ID && (vs.Weight != 0 || vs.State == serving.StateReady):
				t.Errorf("broken %s: weight %d state %s", vs.Version, vs.Weight, vs.State)
			}
		}
	}
	apply(t, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	waitStatus(t, h, tg, "iris", want{v0.ID: 100}, nil)
}

func testRemoveVersion(t *testing.T, h Harness, b Backend) {
	tg := b.New(t)
	v0, v1 := b.Version(t, "iris", 0), b.Version(t, "iris", 1)
	apply(t, tg, deploy("iris", map[string]int{v0.ID: 90, v1.ID: 10}, v0, v1))
	waitStatus(t, h, tg, "iris", want{v0.ID: 90, v1.ID: 10}, nil)
	apply(t, tg, deploy("iris", map[string]int{v1.ID: 100}, v1))
	waitStatus(t, h, tg, "iris", want{v1.ID: 100}, nil)
}

func testDelete(t *testing.T, h Harness, b Backend) {
	tg := b.New(t)
	v0, other := b.Version(t, "iris", 0), b.Version(t, "wine", 0)
	apply(t, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	apply(t, tg, deploy("wine", map[string]int{other.ID: 100}, other))
	waitStatus(t, h, tg, "iris", want{v0.ID: 100}, nil)
	if err := tg.Delete(t.Context(), "iris"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, tg, "iris", nil, nil)
	waitStatus(t, h, tg, "wine", want{other.ID: 100}, nil) // the other model is untouched
}

func testRestart(t *testing.T, h Harness, b Backend) {
	tg := b.New(t)
	v0, v1 := b.Version(t, "iris", 0), b.Version(t, "iris", 1)
	d := deploy("iris", map[string]int{v0.ID: 90, v1.ID: 10}, v0, v1)
	apply(t, tg, d)
	waitStatus(t, h, tg, "iris", want{v0.ID: 90, v1.ID: 10}, nil)
	again := b.New(t)
	waitStatus(t, h, again, "iris", want{v0.ID: 90, v1.ID: 10}, nil)
	// The restarted target converges from there.
	apply(t, again, deploy("iris", map[string]int{v1.ID: 100}, v1))
	waitStatus(t, h, again, "iris", want{v1.ID: 100}, nil)
}

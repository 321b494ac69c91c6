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
// part and writes the InferenceServices' Ready conditions; Memory (this
// package) keeps everything in memory.
package servingtest

import (
	"context"
	"fmt"
	"io"
	"slices"
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
	// state (files, cluster), so a second call is a restarted daemon. A
	// target that is an io.Closer is closed when the test ends.
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
		{"Mirrors", testMirrors},
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

func newTarget(t *testing.T, b Backend) serving.Target {
	tg := b.New(t)
	if c, ok := tg.(io.Closer); ok {
		t.Cleanup(func() { _ = c.Close() })
	}
	return tg
}

func deploy(model string, traffic map[string]int, versions ...serving.Version) serving.Deployment {
	return serving.Deployment{Model: model, Versions: versions, Traffic: traffic}
}

// apply applies d and checks that Apply did not wait for readiness: it
// must return well within the time the suite gives a version to start
// (h.Eventually), even when a version never becomes ready. How long it
// took is logged (the figure the contract aims at is under a second);
// the test does not fail on a slow machine, only on an Apply that waits.
func apply(t *testing.T, h Harness, tg serving.Target, d serving.Deployment) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), h.Eventually/2)
	defer cancel()
	start := time.Now()
	err := tg.Apply(ctx, d)
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("apply %s took %s (its context ended): Apply must record and return, not wait for readiness", d.Model, took.Round(time.Millisecond))
	}
	if err != nil {
		t.Fatalf("apply %s: %v", d.Model, err)
	}
	t.Logf("apply %s (%d versions) returned in %s", d.Model, len(d.Versions), took.Round(time.Millisecond))
}

// want is the expected status of a model: version → weight (every listed
// version must be ready), nil meaning the model is gone.
type want map[string]int

// waitStatus polls Status until the model looks as wanted and is Ready.
func waitStatus(t *testing.T, h Harness, tg serving.Target, model string, w want, mirrors ...serving.Mirror) serving.ModelStatus {
	t.Helper()
	deadline := time.Now().Add(h.Eventually)
	for {
		ms, problem := check(t, tg, model, w, mirrors)
		if problem == "" {
			return ms
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s\nstatus: %+v", h.Eventually, problem, ms)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StatusOf returns model's status as tg reports it (only its Name set when
// tg does not know the model); a Status error fails the test.
func StatusOf(t *testing.T, tg serving.Target, model string) serving.ModelStatus {
	t.Helper()
	ms, ok, err := status(t, tg, model)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		ms.Name = model
	}
	return ms
}

func status(t *testing.T, tg serving.Target, model string) (serving.ModelStatus, bool, error) {
	t.Helper()
	all, err := tg.Status(t.Context())
	if err != nil {
		return serving.ModelStatus{}, false, err
	}
	i := slices.IndexFunc(all, func(ms serving.ModelStatus) bool { return ms.Name == model })
	if i < 0 {
		return serving.ModelStatus{}, false, nil
	}
	return all[i], true, nil
}

func check(t *testing.T, tg serving.Target, model string, w want, mirrors []serving.Mirror) (serving.ModelStatus, string) {
	t.Helper()
	ms, found, err := status(t, tg, model)
	if err != nil {
		return ms, fmt.Sprintf("status: %v", err)
	}
	if w == nil {
		if found && len(ms.Versions) > 0 {
			return ms, fmt.Sprintf("model %s still has versions", model)
		}
		return ms, ""
	}
	if !found {
		return ms, fmt.Sprintf("model %s missing from status", model)
	}
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
		case vs.State != serving.StateReady || !vs.Ready():
			return ms, fmt.Sprintf("%s is %s (%s), want ready", vs.Version, vs.State, vs.LastError)
		}
	}
	if !serving.IsTrue(ms.Conditions, serving.Ready) {
		return ms, fmt.Sprintf("model conditions %+v, want Ready=True", ms.Conditions)
	}
	var active []serving.Mirror
	for _, m := range ms.Mirrors {
		if m.Percent > 0 {
			active = append(active, m)
		}
	}
	slices.SortFunc(active, func(a, b serving.Mirror) int { return compareStrings(a.Version, b.Version) })
	wantM := slices.Clone(mirrors)
	slices.SortFunc(wantM, func(a, b serving.Mirror) int { return compareStrings(a.Version, b.Version) })
	if !slices.Equal(active, wantM) {
		return ms, fmt.Sprintf("mirrors %+v, want %+v", active, wantM)
	}
	return ms, ""
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
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
	tg := newTarget(t, b)
	v := b.Version(t, "iris", 0)
	apply(t, h, tg, deploy("iris", map[string]int{v.ID: 100}, v))
	ms := waitStatus(t, h, tg, "iris", want{v.ID: 100})
	if ms.Versions[0].Endpoint == "" {
		t.Errorf("version %s has no endpoint", v.ID)
	}
	for _, c := range ms.Versions[0].Conditions {
		if c.Reason == "" || c.LastTransitionTime.IsZero() {
			t.Errorf("version condition without a reason or transition time: %+v", c)
		}
	}
}

func testSplit(t *testing.T, h Harness, b Backend) {
	tg := newTarget(t, b)
	v0, v1 := b.Version(t, "iris", 0), b.Version(t, "iris", 1)
	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	waitStatus(t, h, tg, "iris", want{v0.ID: 100})
	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 90, v1.ID: 10}, v0, v1))
	waitStatus(t, h, tg, "iris", want{v0.ID: 90, v1.ID: 10})
	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 50, v1.ID: 50}, v0, v1))
	waitStatus(t, h, tg, "iris", want{v0.ID: 50, v1.ID: 50})
}

// testMirrors runs two shadows of one model at once, each with its own
// share (a shadow rollout beside a pull request's preview), then drops
// them one by one.
func testMirrors(t *testing.T, h Harness, b Backend) {
	tg := newTarget(t, b)
	v0, v1, v2 := b.Version(t, "iris", 0), b.Version(t, "iris", 1), b.Version(t, "iris", 2)
	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	d := deploy("iris", map[string]int{v0.ID: 100}, v0, v1, v2)
	d.Mirrors = []serving.Mirror{{Version: v1.ID, Percent: 20}, {Version: v2.ID, Percent: 100}}
	apply(t, h, tg, d)
	waitStatus(t, h, tg, "iris", want{v0.ID: 100, v1.ID: 0, v2.ID: 0}, d.Mirrors...)
	d = deploy("iris", map[string]int{v0.ID: 100}, v0, v2)
	d.Mirrors = []serving.Mirror{{Version: v2.ID, Percent: 100}}
	apply(t, h, tg, d)
	waitStatus(t, h, tg, "iris", want{v0.ID: 100, v2.ID: 0}, d.Mirrors...)
	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	waitStatus(t, h, tg, "iris", want{v0.ID: 100})
}

// testNotReady applies a split with a version that never becomes ready:
// Apply returns at once, traffic stays where it was, Status says why, and
// another model deploys meanwhile.
func testNotReady(t *testing.T, h Harness, b Backend) {
	tg := newTarget(t, b)
	v0, bad := b.Version(t, "iris", 0), b.Broken(t, "iris")
	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	waitStatus(t, h, tg, "iris", want{v0.ID: 100})

	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 90, bad.ID: 10}, v0, bad))
	other := b.Version(t, "wine", 0)
	apply(t, h, tg, deploy("wine", map[string]int{other.ID: 100}, other))

	// The broken version is reported not ready, with a reason, and never
	// gets traffic; the model says it is waiting for it.
	deadline := time.Now().Add(h.Eventually)
	for {
		ms, _, err := status(t, tg, "iris")
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := ms.Version(v0.ID); !ok || v.Weight != 100 {
			t.Fatalf("%s after applying a broken version: %+v, want weight 100", v0.ID, ms.Versions)
		}
		vb, ok := ms.Version(bad.ID)
		if ok && vb.Weight != 0 {
			t.Fatalf("broken %s got traffic: %+v", bad.ID, vb)
		}
		rc, _ := serving.Find(vb.Conditions, serving.Ready)
		pc, _ := serving.Find(ms.Conditions, serving.Progressing)
		if ok && rc.Status == serving.False && serving.IsTrue(vb.Conditions, serving.Degraded) && rc.Reason != "" &&
			pc.Status == serving.True && pc.Reason == serving.ReasonWaitingForReady {
			t.Logf("broken version: %+v; model: %+v", rc, pc)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the broken version is not reported failed: %+v", h.Eventually, ms)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitStatus(t, h, tg, "wine", want{other.ID: 100}) // not held up by iris

	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	waitStatus(t, h, tg, "iris", want{v0.ID: 100})
}

func testRemoveVersion(t *testing.T, h Harness, b Backend) {
	tg := newTarget(t, b)
	v0, v1 := b.Version(t, "iris", 0), b.Version(t, "iris", 1)
	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 90, v1.ID: 10}, v0, v1))
	waitStatus(t, h, tg, "iris", want{v0.ID: 90, v1.ID: 10})
	apply(t, h, tg, deploy("iris", map[string]int{v1.ID: 100}, v1))
	waitStatus(t, h, tg, "iris", want{v1.ID: 100})
}

func testDelete(t *testing.T, h Harness, b Backend) {
	tg := newTarget(t, b)
	v0, other := b.Version(t, "iris", 0), b.Version(t, "wine", 0)
	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	apply(t, h, tg, deploy("wine", map[string]int{other.ID: 100}, other))
	waitStatus(t, h, tg, "iris", want{v0.ID: 100})
	if err := tg.Delete(t.Context(), "iris"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, tg, "iris", nil)
	waitStatus(t, h, tg, "wine", want{other.ID: 100}) // the other model is untouched
}

func testRestart(t *testing.T, h Harness, b Backend) {
	tg := newTarget(t, b)
	v0, v1 := b.Version(t, "iris", 0), b.Version(t, "iris", 1)
	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 100}, v0))
	waitStatus(t, h, tg, "iris", want{v0.ID: 100})
	apply(t, h, tg, deploy("iris", map[string]int{v0.ID: 90, v1.ID: 10}, v0, v1))
	waitStatus(t, h, tg, "iris", want{v0.ID: 90, v1.ID: 10})
	again := newTarget(t, b)
	waitStatus(t, h, again, "iris", want{v0.ID: 90, v1.ID: 10})
	// The restarted target converges from there.
	apply(t, h, again, deploy("iris", map[string]int{v1.ID: 100}, v1))
	waitStatus(t, h, again, "iris", want{v1.ID: 100})
}

package serving

import (
	"reflect"
	"testing"
	"time"
)

func versions(model string, ids ...string) []Version {
	out := make([]Version, len(ids))
	for i, id := range ids {
		out[i] = Version{ID: id, Model: model}
	}
	return out
}

func TestRoute(t *testing.T) {
	d := func(traffic map[string]int, ids ...string) Deployment {
		return Deployment{Model: "m", Versions: versions("m", ids...), Traffic: traffic}
	}
	tests := []struct {
		name    string
		d       Deployment
		current map[string]int
		ready   []string
		want    Routing
	}{{
		name: "first deployment routes at once",
		d:    d(map[string]int{"a": 100}, "a"),
		want: Routing{Traffic: map[string]int{"a": 100}, Keep: []string{"a"}},
	}, {
		name:    "canary waits for its version",
		d:       d(map[string]int{"a": 90, "b": 10}, "a", "b"),
		current: map[string]int{"a": 100},
		ready:   []string{"a"},
		want:    Routing{Traffic: map[string]int{"a": 100}, Keep: []string{"a", "b"}, Waiting: []string{"b"}},
	}, {
		name:    "canary routed once ready",
		d:       d(map[string]int{"a": 90, "b": 10}, "a", "b"),
		current: map[string]int{"a": 100},
		ready:   []string{"a", "b"},
		want:    Routing{Traffic: map[string]int{"a": 90, "b": 10}, Keep: []string{"a", "b"}},
	}, {
		name:    "a version losing traffic needs no readiness",
		d:       d(map[string]int{"a": 100, "b": 0}, "a", "b"),
		current: map[string]int{"a": 50, "b": 50},
		ready:   []string{"a"},
		want:    Routing{Traffic: map[string]int{"a": 100, "b": 0}, Keep: []string{"a", "b"}},
	}, {
		name:    "an unlisted version keeps running while it still has traffic",
		d:       d(map[string]int{"b": 100}, "b"),
		current: map[string]int{"a": 100},
		ready:   []string{"a"},
		want:    Routing{Traffic: map[string]int{"a": 100}, Keep: []string{"b", "a"}, Waiting: []string{"b"}},
	}, {
		name:    "shadow with no traffic needs no readiness",
		d:       Deployment{Model: "m", Versions: versions("m", "a", "s"), Traffic: map[string]int{"a": 100}, Mirrors: []Mirror{{Version: "s", Percent: 100}}},
		current: map[string]int{"a": 100},
		ready:   []string{"a"},
		want:    Routing{Traffic: map[string]int{"a": 100}, Keep: []string{"a", "s"}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ready := map[string]bool{}
			for _, id := range tc.ready {
				ready[id] = true
			}
			got := Route(tc.d, tc.current, func(id string) bool { return ready[id] })
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Route =\n %+v\nwant\n %+v", got, tc.want)
			}
			if got.Converged() != (len(tc.want.Waiting) == 0) {
				t.Fatalf("Converged = %v", got.Converged())
			}
		})
	}
}

func TestValidateMirrors(t *testing.T) {
	d := Deployment{Model: "m", Versions: versions("m", "a", "s", "p"), Traffic: map[string]int{"a": 100},
		Mirrors: []Mirror{{Version: "s", Percent: 100}, {Version: "p", Percent: 20}}}
	if err := d.Validate(); err != nil {
		t.Fatalf("two mirrors: %v", err)
	}
	d.Mirrors = append(d.Mirrors, Mirror{Version: "s", Percent: 5})
	if err := d.Validate(); err == nil {
		t.Fatal("a version mirrored twice passed validation")
	}
	d.Mirrors = []Mirror{{Version: "x", Percent: 5}}
	if err := d.Validate(); err == nil {
		t.Fatal("a mirror of an unlisted version passed validation")
	}
}

func TestVersionConditions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	c := VersionConditions(nil, StateStarting, "", "", t0)
	if IsTrue(c, Ready) || !IsTrue(c, Progressing) || IsTrue(c, Degraded) {
		t.Fatalf("starting: %+v", c)
	}
	c = VersionConditions(c, StateReady, "", "", t1)
	r, _ := Find(c, Ready)
	if r.Status != True || r.Reason != ReasonAvailable || !r.LastTransitionTime.Equal(t1) {
		t.Fatalf("ready: %+v", r)
	}
	d, _ := Find(c, Degraded)
	if d.Status != False || !d.LastTransitionTime.Equal(t0) {
		t.Fatalf("degraded kept its transition time: %+v", d)
	}
	v := VersionStatus{Conditions: VersionConditions(c, StateFailed, "", "exit 1", t1)}
	if v.Failed() || v.Ready() {
		t.Fatalf("a restarting version is not failed for good: %+v", v.Conditions)
	}
	v.Conditions = VersionConditions(v.Conditions, StateFailed, ReasonCrashLoop, "exit 1", t1)
	if !v.Failed() {
		t.Fatalf("a crash loop is a failure: %+v", v.Conditions)
	}
	if d, _ := Find(v.Conditions, Degraded); d.Reason != ReasonCrashLoop || d.Message != "exit 1" {
		t.Fatalf("degraded: %+v", d)
	}
}

func TestErrorReason(t *testing.T) {
	err := Errorf(ReasonBuild, "copy %s", "x")
	if ReasonOf(err) != ReasonBuild || ReasonOf(WithReason(ReasonServing, err)) != ReasonBuild {
		t.Fatal("reason lost")
	}
	if WithReason(ReasonServing, nil) != nil {
		t.Fatal("nil gained a reason")
	}
}

// TestDeploymentClone: a target keeps a clone of what it was given; the
// caller changing its deployment afterwards changes nothing in the clone.
func TestDeploymentClone(t *testing.T) {
	d := Deployment{
		Model: "iris", Versions: []Version{{ID: "iris-a", Model: "iris"}, {ID: "iris-b", Model: "iris"}},
		Traffic: map[string]int{"iris-a": 100}, Mirrors: []Mirror{{Version: "iris-b", Percent: 10}},
		Compare: &Compare{Version: "iris-b", Baseline: "iris-a", Percent: 5},
	}
	c := d.Clone()
	d.Versions[0].ID, d.Traffic["iris-a"], d.Mirrors[0].Percent, d.Compare.Percent = "x", 0, 99, 99
	if c.Versions[0].ID != "iris-a" || c.Traffic["iris-a"] != 100 || c.Mirrors[0].Percent != 10 || c.Compare.Percent != 5 {
		t.Errorf("the clone changed with the original: %+v", c)
	}
}

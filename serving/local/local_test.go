package local

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// TestMirrorsCompareEach mirrors every request of a model to two shadows
// at once (a shadow rollout's candidate and a pull request's preview) and
// checks that each keeps its own comparison with the served predictions.
func TestMirrorsCompareEach(t *testing.T) {
	requireSklearn(t)
	model := irisModel(t)
	l := newTestLocal(t, t.TempDir())
	defer l.Close()
	stable, shadow, preview := testVersion("iris", 1, model), testVersion("iris", 2, model), testVersion("iris", 3, model)
	d := serving.Deployment{
		Model: "iris", Versions: []serving.Version{stable, shadow, preview},
		Traffic: map[string]int{stable.ID: 100},
		Mirrors: []serving.Mirror{{Version: shadow.ID, Percent: 100}, {Version: preview.ID, Percent: 100}},
	}
	if err := l.Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Minute, "three versions ready", func() bool {
		ms := servingtest.StatusOf(t, l, "iris")
		n := 0
		for _, v := range ms.Versions {
			if v.Ready() {
				n++
			}
		}
		return n == 3
	})
	srv := httptest.NewServer(l)
	defer srv.Close()
	for range 10 {
		resp, err := http.Post(srv.URL+"/v1/models/iris:predict", "application/json", strings.NewReader(`{"instances": [[5.1, 3.5, 1.4, 0.2]]}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Merlin-Version") != stable.ID {
			t.Fatalf("predict: %d from %q; want 200 from %s", resp.StatusCode, resp.Header.Get("X-Merlin-Version"), stable.ID)
		}
	}
	poll.Until(t, 10*time.Second, "both mirrors compared 10 requests", func() bool {
		ms := servingtest.StatusOf(t, l, "iris")
		n := 0
		for _, v := range ms.Versions {
			if c := v.Comparison; c != nil && c.Agree == 10 {
				n++
			}
		}
		return n == 2
	})
	ms := servingtest.StatusOf(t, l, "iris")
	if len(ms.Mirrors) != 2 || ms.Mirror == nil || ms.Mirror.Version != shadow.ID {
		t.Errorf("mirrors %+v (first %+v); want both, the shadow first", ms.Mirrors, ms.Mirror)
	}
	for _, v := range ms.Versions {
		switch v.Version {
		case stable.ID:
			if v.Weight != 100 || v.Comparison != nil {
				t.Errorf("stable: weight %d, comparison %+v", v.Weight, v.Comparison)
			}
		default:
			if v.Weight != 0 || v.Comparison.Agreement != 1 || v.Comparison.Disagree != 0 {
				t.Errorf("%s: weight %d, comparison %+v; want no traffic, full agreement", v.Version, v.Weight, v.Comparison)
			}
		}
	}
}

// TestRestoreKeepsRoutedSplit: a version that never becomes ready is
// desired when the target stops; the next target restores both the
// desired deployment and the split routed then, so clients stay on the
// version that answered instead of being sent to the broken one.
func TestRestoreKeepsRoutedSplit(t *testing.T) {
	requireSklearn(t)
	model := irisModel(t)
	dir := t.TempDir()
	good, bad := testVersion("iris", 1, model), testVersion("iris", 999, brokenModel(t, model))
	l := newTestLocal(t, dir)
	if err := l.Apply(context.Background(), serving.Deployment{Model: "iris", Versions: []serving.Version{good}, Traffic: map[string]int{good.ID: 100}}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Minute, "the good version serves", func() bool {
		v, _ := servingtest.StatusOf(t, l, "iris").Version(good.ID)
		return v.Ready() && v.Weight == 100
	})
	if err := l.Apply(context.Background(), serving.Deployment{Model: "iris", Versions: []serving.Version{bad}, Traffic: map[string]int{bad.ID: 100}}); err != nil {
		t.Fatal(err)
	}
	l.Close()

	l = newTestLocal(t, dir)
	defer l.Close()
	poll.Until(t, 2*time.Minute, "restored: good serves, bad failed", func() bool {
		ms := servingtest.StatusOf(t, l, "iris")
		g, _ := ms.Version(good.ID)
		b, _ := ms.Version(bad.ID)
		return g.Ready() && g.Weight == 100 && b.Failed() && b.Weight == 0
	})
	ms := servingtest.StatusOf(t, l, "iris")
	if c, _ := serving.Find(ms.Conditions, serving.Ready); c.Status != serving.False || c.Reason != serving.ReasonWaitingForReady {
		t.Errorf("model Ready condition %+v; want False, %s", c, serving.ReasonWaitingForReady)
	}
	if c, _ := serving.Find(ms.Conditions, serving.Degraded); c.Status != serving.True || c.Reason != serving.ReasonVersionFailed {
		t.Errorf("model Degraded condition %+v; want True, %s", c, serving.ReasonVersionFailed)
	}
}

// TestDecodeLegacyDeployments reads deployments.json as written before the
// routed split was kept (a bare deployment with at most one mirror) and in
// the current form.
func TestDecodeLegacyDeployments(t *testing.T) {
	legacy := `{"iris": {"Model": "iris", "Versions": [{"ID": "iris-aaaaaaaa", "Model": "iris"}, {"ID": "iris-bbbbbbbb", "Model": "iris"}],
	  "Traffic": {"iris-aaaaaaaa": 100}, "Mirror": {"version": "iris-bbbbbbbb", "percent": 20}}}`
	models, err := decodeModels([]byte(legacy))
	if err != nil {
		t.Fatal(err)
	}
	st := models["iris"]
	if len(st.Desired.Versions) != 2 || st.Routed["iris-aaaaaaaa"] != 100 ||
		len(st.Desired.Mirrors) != 1 || st.Desired.Mirrors[0] != (serving.Mirror{Version: "iris-bbbbbbbb", Percent: 20}) {
		t.Errorf("legacy decoded as %+v", st)
	}
	current := `{"iris": {"desired": {"Model": "iris", "Versions": [{"ID": "iris-bbbbbbbb", "Model": "iris"}], "Traffic": {"iris-bbbbbbbb": 100}},
	  "routed": {"iris-aaaaaaaa": 100}, "retained": [{"ID": "iris-aaaaaaaa", "Model": "iris"}]}}`
	if models, err = decodeModels([]byte(current)); err != nil {
		t.Fatal(err)
	}
	st = models["iris"]
	if st.Desired.Traffic["iris-bbbbbbbb"] != 100 || st.Routed["iris-aaaaaaaa"] != 100 || len(st.Retained) != 1 {
		t.Errorf("current decoded as %+v", st)
	}
	if _, err := decodeModels([]byte(`{"iris": [1]}`)); err == nil {
		t.Error("a corrupt file decoded without error")
	}
}

// TestLogsStayBounded: after hundreds of versions, the logs directory
// holds the running versions' logs and the StoppedLogs most recent others.
func TestLogsStayBounded(t *testing.T) {
	dir := t.TempDir()
	l := newTestLocal(t, dir)
	defer l.Close()
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour)
	for i := range 200 {
		p := filepath.Join(logs, fmt.Sprintf("iris-%08d.log", i))
		if err := os.WriteFile(p, []byte("a line\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		mod := base.Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	running := "iris-00000000" // the oldest log, but its version runs
	l.pruneLogs(map[string]bool{running: true})
	entries, err := os.ReadDir(logs)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	want := []string{running + ".log"}
	for i := 200 - StoppedLogs; i < 200; i++ {
		want = append(want, fmt.Sprintf("iris-%08d.log", i))
	}
	if !slices.Equal(left, want) {
		t.Errorf("left %d logs %v; want the running version's and the %d newest", len(left), left, StoppedLogs)
	}
}

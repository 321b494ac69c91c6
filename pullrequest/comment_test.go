package pullrequest

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current rendering")

var t0 = time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC)

func ready() []serving.Condition {
	return []serving.Condition{{Type: serving.Ready, Status: serving.True}, {Type: serving.Degraded, Status: serving.False}}
}

// production returns a model's status with pull request pr's preview of
// version preview among its versions.
func production(name, stable string, pr int, preview string, state serving.State) serving.ModelStatus {
	s := serving.ModelStatus{Name: name, File: name + "/merlin.yaml", Strategy: "canary", Desired: stable, Phase: rollout.Idle,
		Versions: []serving.VersionStatus{{Version: stable, Role: serving.RoleStable, Weight: 100, State: serving.StateReady, Conditions: ready()}}}
	if preview != "" {
		v := serving.VersionStatus{Version: preview, Role: serving.RolePreview, PR: pr, State: state}
		if state == serving.StateReady {
			v.Conditions = ready()
		}
		s.Versions = append(s.Versions, v)
		s.Mirrors = []serving.Mirror{{Version: preview, Percent: 10}}
	}
	return s
}

func history(n int) []Sample {
	h := make([]Sample, n)
	for i := range h {
		h[i] = Sample{At: t0.Add(time.Duration(i) * time.Minute), Agreement: 0.9 + 0.01*float64(i%10), P99: time.Duration(10+i%5) * time.Millisecond}
	}
	return h
}

func previewing(pr int) Report {
	return Report{
		Status:     production("iris-sklearn", "iris-sklearn-9f8e7d6c", pr, "iris-sklearn-1234abcd", serving.StateReady),
		Version:    "iris-sklearn-1234abcd",
		Preview:    Measure{Requests: 1204, Errors: 1, Compared: 1190, Agreement: 0.982, P50: 4100 * time.Microsecond, P99: 12 * time.Millisecond},
		Production: Measure{Requests: 12040, Errors: 2, P50: 3900 * time.Microsecond, P99: 11 * time.Millisecond},
		History:    history(8),
	}
}

func TestRenderGolden(t *testing.T) {
	pr := PR{Number: 42, HeadSHA: "0123456789abcdef0123456789abcdef01234567", StatusURL: "https://merlin.example.com/"}
	hostile := previewing(42)
	hostile.Status.Name = "iris|<script>alert(1)</script>`-->@admin"
	hostile.Error = "models/iris/merlin.yaml:3:7: unknown field \"c|ass\" <!-- --> ```"
	hostile.ErrorReason = serving.ReasonManifest

	starting := previewing(42)
	starting.Status = production("iris-xgboost", "iris-xgboost-aaaaaaaa", 42, "iris-xgboost-bbbbbbbb", serving.StateStarting)
	starting.Version, starting.Preview, starting.Production, starting.History = "iris-xgboost-bbbbbbbb", Measure{}, Measure{}, nil

	merged := previewing(42)
	merged.Status.Desired, merged.Status.Phase, merged.Status.Step, merged.Status.Steps = merged.Version, rollout.Progressing, 2, 4
	merged.Status.Versions[1].Role, merged.Status.Versions[1].Weight = serving.RoleCandidate, 25
	merged.Status.Versions[0].Weight = 75

	done := previewing(42)
	done.Status.Desired = done.Version
	done.Status.Versions = []serving.VersionStatus{{Version: done.Version, Role: serving.RoleStable, Weight: 100, State: serving.StateReady, Conditions: ready()}}

	tests := []struct {
		name string
		c    Comment
	}{
		{"previewing", Comment{PR: pr, Models: []Report{previewing(42), starting}}},
		{"fork-waiting", Comment{PR: PR{Number: 42, HeadSHA: pr.HeadSHA, Fork: true}, Models: []Report{{Status: production("iris-sklearn", "iris-sklearn-9f8e7d6c", 0, "", ""), Version: "iris-sklearn-1234abcd"}}}},
		{"fork-pushed-after-approval", Comment{PR: PR{Number: 42, HeadSHA: pr.HeadSHA, Fork: true, ApprovedSHA: "fedcba9876543210"}, Models: []Report{{Status: production("iris-sklearn", "iris-sklearn-9f8e7d6c", 0, "", ""), Version: "iris-sklearn-1234abcd"}}}},
		{"merged-rolling-out", Comment{PR: PR{Number: 42, HeadSHA: pr.HeadSHA, Merged: true, StatusURL: pr.StatusURL}, Models: []Report{merged}}},
		{"hostile", Comment{PR: PR{Number: 42, HeadSHA: "<b>not-a-sha</b>", StatusURL: "javascript:alert(1)"}, Models: []Report{hostile}}},
		{"no-models", Comment{PR: pr}},
		{"closed", Comment{PR: PR{Number: 42, HeadSHA: pr.HeadSHA, Closed: true}, Models: []Report{previewing(42)}}},
		{"merged-done", Comment{PR: PR{Number: 42, HeadSHA: pr.HeadSHA, Merged: true, Closed: true}, Models: []Report{done}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Render(tt.c, 0)
			golden := filepath.Join("testdata", "golden", tt.name+".md")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("rendering differs from %s (run with -update to accept):\n%s", golden, got)
			}
			checkWellFormed(t, got, tt.c.PR.Number)
		})
	}
}

// checkWellFormed asserts the invariants of every comment: the marker
// parses back, fences are closed, and every table row has its three cells.
func checkWellFormed(t *testing.T, body string, pr int) {
	t.Helper()
	if n, ok := ParseMarker(body); !ok || n != pr {
		t.Errorf("ParseMarker = %d, %v; want %d", n, ok, pr)
	}
	if len(body) > MaxCommentLen {
		t.Errorf("comment is %d bytes, over %d", len(body), MaxCommentLen)
	}
	fences := 0
	for i, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "```") {
			fences++
		}
		inFence := fences%2 == 1 || strings.HasPrefix(line, "```")
		if i > 0 && !inFence && strings.Contains(line, "-->") {
			t.Errorf("line %d closes an HTML comment: %q", i+1, line)
		}
		if strings.Contains(strings.ToLower(line), "<script") {
			t.Errorf("line %d carries raw HTML: %q", i+1, line)
		}
		if inFence && (strings.Contains(line, "\\") || strings.Contains(line, "&")) {
			t.Errorf("line %d: text from outside Merlin inside a fence: %q", i+1, line)
		}
		if strings.HasPrefix(line, "| ") {
			if cells := unescapedPipes(line); cells != 4 {
				t.Errorf("table row %d has %d unescaped pipes, want 4: %q", i+1, cells, line)
			}
		}
	}
	if fences%2 != 0 {
		t.Errorf("%d fence lines: a code block is left open", fences)
	}
}

func unescapedPipes(line string) int {
	n := 0
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '\\':
			i++
		case '|':
			n++
		}
	}
	return n
}

func TestRenderTruncatesHugeInput(t *testing.T) {
	long := strings.Repeat("x|`<!--```-->", 2000)
	var models []Report
	for range 500 {
		r := previewing(7)
		r.Status.Name = long
		r.Error, r.ErrorReason = long, serving.ReasonBuild
		r.History = history(500)
		models = append(models, r)
	}
	for _, limit := range []int{0, 5000, 2000} {
		body := Render(Comment{PR: PR{Number: 7, HeadSHA: "abc", StatusURL: "https://m.example/"}, Models: models}, limit)
		max := limit
		if max == 0 {
			max = MaxCommentLen
		}
		if len(body) > max {
			t.Errorf("limit %d: %d bytes", limit, len(body))
		}
		checkWellFormed(t, body, 7)
		if !strings.Contains(body, "models are not shown") {
			t.Errorf("limit %d: no truncation note", limit)
		}
	}
}

func TestRenderFitsWithoutNote(t *testing.T) {
	body := Render(Comment{PR: PR{Number: 3}, Models: []Report{previewing(3)}}, 0)
	if strings.Contains(body, "not shown") {
		t.Errorf("a small comment was truncated:\n%s", body)
	}
}

func TestStageOf(t *testing.T) {
	open := PR{Number: 5, HeadSHA: "aaa"}
	failed := previewing(5)
	failed.Status.Versions[1].Conditions = []serving.Condition{{Type: serving.Degraded, Status: serving.True}, {Type: serving.Progressing, Status: serving.False}}
	building := previewing(5)
	building.Status.Versions = building.Status.Versions[:1]
	infra := previewing(5)
	infra.Error, infra.ErrorReason = "clone: connection refused", serving.ReasonSource
	broken := previewing(5)
	broken.Error, broken.ErrorReason = "merlin.yaml:1:1: bad", serving.ReasonManifest
	rolling := previewing(5)
	rolling.Status.Desired, rolling.Status.Phase = rolling.Version, rollout.Progressing
	awaiting := rolling
	awaiting.Status.Phase = rollout.AwaitingPromotion
	done := previewing(5)
	done.Status.Versions = []serving.VersionStatus{{Version: done.Version, Role: serving.RoleStable, Weight: 100}}
	done.Status.Desired = done.Version
	rolledBack := rolling
	rolledBack.Status.RolledBack, rolledBack.Status.Phase = rolling.Version, rollout.RolledBack
	superseded := previewing(5)
	superseded.Status.Desired = "iris-sklearn-cccccccc"

	merged := PR{Number: 5, HeadSHA: "aaa", Merged: true, Closed: true}
	tests := []struct {
		name string
		p    PR
		r    Report
		want Stage
	}{
		{"previewing", open, previewing(5), StagePreviewing},
		{"preview of another pr is not ours", PR{Number: 6}, previewing(5), StageBuilding},
		{"not deployed yet", open, building, StageBuilding},
		{"crash loop", open, failed, StageBroken},
		{"manifest error", open, broken, StageBroken},
		{"source error", open, infra, StageError},
		{"fork without approval", PR{Number: 5, HeadSHA: "aaa", Fork: true}, previewing(5), StageAwaitingApproval},
		{"fork approved at head", PR{Number: 5, HeadSHA: "aaa", Fork: true, ApprovedSHA: "aaa"}, previewing(5), StagePreviewing},
		{"fork pushed after approval", PR{Number: 5, HeadSHA: "bbb", Fork: true, ApprovedSHA: "aaa"}, previewing(5), StageAwaitingApproval},
		{"closed", PR{Number: 5, Closed: true}, previewing(5), StageClosed},
		{"merged rolling out", merged, rolling, StageRollingOut},
		{"merged awaiting promotion", merged, awaiting, StageAwaitingPromote},
		{"merged done", merged, done, StageServing},
		{"merged rolled back", merged, rolledBack, StageRolledBack},
		{"merged superseded", merged, superseded, StageSuperseded},
		{"merged fork runs the rollout", PR{Number: 5, Fork: true, Merged: true}, rolling, StageRollingOut},
	}
	for _, tt := range tests {
		if got := StageOf(tt.p, tt.r); got != tt.want {
			t.Errorf("%s: StageOf = %q, want %q", tt.name, got, tt.want)
		}
	}
}

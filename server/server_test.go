package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/reconciler"
	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
)

// repoFixture is a reconciled repository with a fixed status; it records
// the commands it receives.
type repoFixture struct {
	status   reconciler.Status
	commands []string
	err      error
}

func (r *repoFixture) Repo() string              { return r.status.Repo }
func (r *repoFixture) Status() reconciler.Status { return r.status }
func (r *repoFixture) Command(_ context.Context, model string, cmd rollout.Command) (reconciler.CommandResult, error) {
	r.commands = append(r.commands, model+" "+string(cmd))
	return reconciler.CommandResult{Model: model, Phase: rollout.Progressing}, r.err
}

func newTestServer(t *testing.T) (*httptest.Server, *repoFixture) {
	return newTestServerWith(t, Options{})
}

// newTestServerWith serves the fixture with opts (Repos and Version are
// set here).
func newTestServerWith(t *testing.T, opts Options) (*httptest.Server, *repoFixture) {
	ready := serving.VersionConditions(nil, serving.StateReady, "", "", time.Now())
	repo := &repoFixture{status: reconciler.Status{Repo: "models", Models: []serving.ModelStatus{
		{Name: "iris", Repo: "models", File: "iris/merlin.yaml", Strategy: "canary", Phase: rollout.Progressing, Step: 2, Steps: 3,
			Versions: []serving.VersionStatus{
				{Version: "iris-aaaaaaaa", Role: serving.RoleStable, Weight: 50, State: serving.StateReady, Endpoint: "127.0.0.1:1", Conditions: ready},
				{Version: "iris-bbbbbbbb", Role: serving.RoleCandidate, Weight: 50, State: serving.StateReady, Endpoint: "127.0.0.1:2", Conditions: ready},
			}},
		{Name: "broken", Repo: "models", File: "broken/merlin.yaml", Strategy: "direct", Held: true, Phase: rollout.Idle,
			LastError: "broken/merlin.yaml:9:3: spec.replica: unknown field",
			Versions:  []serving.VersionStatus{{Version: "broken-cccccccc", Role: serving.RoleStable, Weight: 100, State: serving.StateReady}},
			Conditions: []serving.Condition{{Type: serving.Degraded, Status: serving.True, Reason: serving.ReasonManifest,
				Message: "broken/merlin.yaml:9:3: spec.replica: unknown field"}}},
	}}}
	opts.Repos, opts.Version = []Repo{repo}, "test"
	srv := httptest.NewServer(New(opts))
	t.Cleanup(srv.Close)
	return srv, repo
}

func do(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var compact bytes.Buffer
	if json.Compact(&compact, b) == nil {
		b = compact.Bytes()
	}
	return resp.StatusCode, string(b)
}

func TestModelsView(t *testing.T) {
	srv, _ := newTestServer(t)
	code, body := do(t, "GET", srv.URL+"/api/v1/models")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var out struct{ Models []serving.ModelStatus }
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Models) != 2 || out.Models[0].Name != "broken" || out.Models[1].Name != "iris" {
		t.Fatalf("models not listed sorted by name: %s", body)
	}
	iris := out.Models[1]
	if iris.Step != 2 || iris.Steps != 3 || iris.Phase != rollout.Progressing {
		t.Errorf("iris step %d/%d phase %s, want 2/3 Progressing", iris.Step, iris.Steps, iris.Phase)
	}
	if len(iris.Versions) != 2 || iris.Versions[0].Role != "stable" || iris.Versions[1].Role != "candidate" ||
		iris.Versions[1].Weight != 50 || iris.Versions[1].Endpoint != "127.0.0.1:2" || iris.Versions[1].State != serving.StateReady {
		t.Errorf("iris versions %+v", iris.Versions)
	}
	broken := out.Models[0]
	if !broken.Held || !strings.HasPrefix(broken.LastError, "broken/merlin.yaml:9:3: ") || broken.Versions[0].Weight != 100 {
		t.Errorf("held model view %+v", broken)
	}
	if c, ok := serving.Find(broken.Conditions, serving.Degraded); !ok || c.Reason != serving.ReasonManifest {
		t.Errorf("held model conditions %+v, want Degraded with reason %s", broken.Conditions, serving.ReasonManifest)
	}
	if !strings.Contains(body, `"lastError":"broken/merlin.yaml:9:3:`) || !strings.Contains(body, `"role":"candidate"`) ||
		!strings.Contains(body, `"endpoint":"127.0.0.1:2"`) || !strings.Contains(body, `"weight":50`) || !strings.Contains(body, `"state":"ready"`) {
		t.Errorf("the API's JSON field names changed (SPEC §5): %s", body)
	}
}

func TestModelAndCommandErrors(t *testing.T) {
	srv, repo := newTestServer(t)
	for _, tc := range []struct {
		method, path string
		code         int
		want         string
	}{
		{"GET", "/api/v1/models/iris", 200, `"name":"iris"`},
		{"GET", "/api/v1/models/nope", 404, "model nope not found"},
		{"POST", "/api/v1/models/iris/promote", 200, `"phase":"Progressing"`},
		{"POST", "/api/v1/models/iris/explode", 404, "unknown action explode"},
		{"POST", "/api/v1/models/nope/rollback", 404, "model nope not found"},
		{"GET", "/healthz", 200, "ok"},
		{"GET", "/api/v1/repos", 200, `"repo":"models"`},
	} {
		code, body := do(t, tc.method, srv.URL+tc.path)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s = %d %s, want %d …%s…", tc.method, tc.path, code, body, tc.code, tc.want)
		}
	}
	if len(repo.commands) != 1 || repo.commands[0] != "iris promote" {
		t.Errorf("commands reached the reconciler: %v", repo.commands)
	}
	repo.err = errors.New("nothing to promote")
	if code, body := do(t, "POST", srv.URL+"/api/v1/models/iris/promote"); code != 409 || !strings.Contains(body, "nothing to promote") {
		t.Errorf("refused command = %d %s, want 409", code, body)
	}
}

// TestRepoErrorsShown: a repository error (nothing of the repository is
// reconciled) and file errors (the models of one file are held) are on
// the status page and in /api/v1/repos, not only in the logs.
func TestRepoErrorsShown(t *testing.T) {
	srv, repo := newTestServer(t)
	repo.status.Error = `paths: "modles" does not exist at 0123456789ab`
	repo.status.FileErrors = map[string]string{"iris/merlin.yaml": `iris/merlin.yaml:1:1: symlink to "gone.yaml": the target does not exist`}
	_, page := do(t, "GET", srv.URL+"/")
	_, api := do(t, "GET", srv.URL+"/api/v1/repos")
	for _, want := range []string{`paths: &#34;modles&#34; does not exist`, `iris/merlin.yaml:1:1: symlink to &#34;gone.yaml&#34;`} {
		if !strings.Contains(page, want) {
			t.Errorf("status page does not show %s:\n%s", want, page)
		}
	}
	for _, want := range []string{`"error":"paths: \"modles\" does not exist`, `"fileErrors":{"iris/merlin.yaml":"iris/merlin.yaml:1:1: symlink`} {
		if !strings.Contains(api, want) {
			t.Errorf("/api/v1/repos does not show %s: %s", want, api)
		}
	}
}

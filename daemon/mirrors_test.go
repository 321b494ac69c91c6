package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/local/modelserver"
)

// requirePython returns the model servers' interpreter, or skips the test
// (fails it in CI) when Debian's Python lacks what they need.
func requirePython(t *testing.T) string {
	t.Helper()
	py, err := modelserver.Python()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip("SKIPPING: ", err)
	}
	return py
}

// irisWith is the iris example's manifest with a shadow rollout that lasts
// (so its candidate stays mirrored) and extra spec lines, which make a new
// version.
func irisWith(t *testing.T, extra string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "examples", "iris-sklearn", "merlin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(data), "    strategy: direct\n", "    strategy: shadow\n    interval: 1h\n    mirrorPercent: 100\n", 1)
	out = strings.Replace(out, "  protocol: v1\n", "  protocol: v1\n"+extra, 1)
	if !strings.Contains(out, "strategy: shadow") {
		t.Fatal("examples/iris-sklearn/merlin.yaml has no direct strategy to replace")
	}
	return out
}

// TestTwoMirrorsLocal runs a shadow rollout and a pull request's preview of
// the same model at once on the local target with real model servers: both
// are mirrored, and /api/v1/models shows each one's own agreement.
func TestTwoMirrorsLocal(t *testing.T) {
	py := requirePython(t)
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "iris")
	repo.Commit("shadow rollouts", map[string]string{"iris/merlin.yaml": irisWith(t, "")})
	d := startDaemon(t, "local", fmt.Sprintf(`repositories: [{name: models, url: %q, interval: 1s}]
local: {listen: "127.0.0.1:0", stateDir: %q, python: %q}
server: {listen: "127.0.0.1:0"}
`, repo.Bare, t.TempDir(), py))
	model := func() serving.ModelStatus { return d.model(t, "iris-sklearn") }
	poll.Until(t, 2*time.Minute, "the first version serves", func() bool {
		ms := model()
		return len(ms.Versions) == 1 && ms.Versions[0].Weight == 100 && ms.Versions[0].Ready()
	})

	// A change starts a shadow rollout: the candidate is mirrored.
	repo.Commit("debug logs", map[string]string{"iris/merlin.yaml": irisWith(t, "  env: [{name: LOG_LEVEL, value: debug}]\n")})
	poll.Until(t, 2*time.Minute, "the shadow candidate is mirrored", func() bool { return len(model().Mirrors) == 1 })

	// Pull request 7 previews a third version beside it.
	preview := buildPreview(t, irisWith(t, "  env: [{name: LOG_LEVEL, value: info}]\n"))
	rec := d.d.repos[0].rec.Load()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := rec.SetPreview(ctx, 7, preview, 100); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Minute, "two mirrors, every version ready", func() bool {
		ms := model()
		ready := len(ms.Versions) == 3
		for _, v := range ms.Versions {
			ready = ready && v.Ready()
		}
		return ready && len(ms.Mirrors) == 2
	})

	body := `{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}`
	for range 20 {
		resp, err := http.Post("http://"+d.d.ModelsAddr()+"/v1/models/iris-sklearn:predict", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("predict: %d", resp.StatusCode)
		}
	}
	var ms serving.ModelStatus
	poll.Until(t, 30*time.Second, "each mirror compared 20 requests", func() bool {
		ms = model()
		n := 0
		for _, v := range ms.Versions {
			if (v.Role == serving.RoleCandidate || v.Role == serving.RolePreview) && v.Comparison != nil && v.Comparison.Agree+v.Comparison.Disagree >= 20 {
				n++
			}
		}
		return n == 2
	})
	for _, v := range ms.Versions {
		t.Logf("%s role %s pr %d weight %d comparison %+v", v.Version, v.Role, v.PR, v.Weight, v.Comparison)
		switch v.Role {
		case serving.RoleStable:
			if v.Weight != 100 || v.Comparison != nil {
				t.Errorf("stable %s: weight %d, comparison %+v; want all traffic, nothing compared", v.Version, v.Weight, v.Comparison)
			}
		case serving.RoleCandidate, serving.RolePreview:
			if v.Weight != 0 || v.Comparison.Agreement != 1 {
				t.Errorf("%s %s: weight %d, agreement %v; want no traffic and full agreement (same model)", v.Role, v.Version, v.Weight, v.Comparison.Agreement)
			}
			if v.Role == serving.RolePreview && (v.PR != 7 || v.Version != preview.ID) {
				t.Errorf("preview %s of pr %d; want %s of pr 7", v.Version, v.PR, preview.ID)
			}
		default:
			t.Errorf("unexpected version %s with role %q", v.Version, v.Role)
		}
	}
}

// buildPreview builds the iris example's model with manifest text as a
// version, as a pull request's preview would be built.
func buildPreview(t *testing.T, text string) serving.Version {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("..", "examples", "iris-sklearn", "model")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "model"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "model", e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "merlin.yaml"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := manifest.Load(os.DirFS(dir), ".")
	if err != nil || len(files) != 1 || len(files[0].Models) != 1 || len(files[0].AllErrors()) > 0 {
		t.Fatalf("preview manifest: %v %+v", err, files)
	}
	m := files[0].Models[0]
	b, err := builder.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src2, err := builder.SourceDir(m, ".")
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Build(os.DirFS(dir), src2, m)
	if err != nil {
		t.Fatal(err)
	}
	v := builder.Version(m, res.Digest, builder.Origin{Repo: "pr-7"})
	v.Bundle = res.Bundle
	return v
}

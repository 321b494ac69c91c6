package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// minAgreementModel writes a model whose canary is judged on prediction
// agreement, which the kubernetes target cannot measure.
func minAgreementModel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	manifest := `apiVersion: merlin.dev/v1
kind: Model
metadata:
  name: iris
spec:
  type: sklearn
  source:
    path: ./model
  rollout:
    strategy: canary
    analysis:
      minAgreement: 95%
`
	if err := os.MkdirAll(filepath.Join(dir, "model"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"merlin.yaml": manifest, "model/MLmodel": "flavors:\n  sklearn: {}\n", "model/model.pkl": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestValidateTarget: minAgreement is fine on the local target and a
// positioned error on the kubernetes target, chosen by flag or by the
// daemon's configuration, and for `merlin render --target kubernetes`.
func TestValidateTarget(t *testing.T) {
	dir := minAgreementModel(t)
	if code, out, errOut := merlin(t, "validate", "--target", "local", dir); code != exitOK {
		t.Fatalf("local target: exit %d\n%s%s", code, out, errOut)
	}
	config := filepath.Join(t.TempDir(), "merlin.config.yaml")
	cfg := "target: kubernetes\nkubernetes:\n  namespace: models\n  host: models.example.com\nrepositories:\n  - name: models\n    url: https://example.com/models.git\n"
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"validate", "--target", "kubernetes", dir}, {"validate", "--config", config, dir}} {
		code, out, errOut := merlin(t, args...)
		if code != exitFailure || !strings.Contains(out, "merlin.yaml:12:21: spec.rollout.analysis.minAgreement: the kubernetes target does not compare predictions") {
			t.Errorf("%v: exit %d\n%s%s", args[:3], code, out, errOut)
		}
	}
	code, out, errOut := merlin(t, "render", "--target", "kubernetes", "--namespace", "models", "--host", "models.example.com", "--registry", "registry.example.com/models", dir)
	if code != exitFailure || !strings.Contains(errOut, "merlin.yaml:12:21: spec.rollout.analysis.minAgreement: the kubernetes target does not compare predictions") || out != "" {
		t.Errorf("render --target kubernetes: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

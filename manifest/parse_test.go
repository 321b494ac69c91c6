package manifest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultsAndRender(t *testing.T) {
	f := Parse("m/merlin.yaml", []byte(head+"  replicas: {min: 0}\n"))
	if errs := f.AllErrors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	var buf bytes.Buffer
	if err := Render(&buf, f.Models); err != nil {
		t.Fatal(err)
	}
	want := `# Source: m/merlin.yaml
apiVersion: merlin.dev/v1
kind: Model
metadata:
  name: fraud
spec:
  type: sklearn
  source:
    path: ./model
  protocol: v1
  replicas:
    min: 0
    max: 1
  rollout:
    strategy: canary
    steps:
      - 10
      - 50
      - 100
    interval: 30s
    progressDeadline: 10m0s
    promotion: auto
    analysis:
      minRequests: 50
      maxErrorRate: 1%
      maxLatencyRatio: 1.5
      failureLimit: 2
  preview:
    enabled: true
    mirrorPercent: 100
`
	if buf.String() != want {
		t.Errorf("render:\n%s\nwant:\n%s", buf.String(), want)
	}
	// What render prints parses back to the same, valid model.
	again := Parse("m/merlin.yaml", buf.Bytes())
	if errs := again.AllErrors(); len(errs) > 0 {
		t.Fatalf("rendered output does not parse: %v", errs)
	}
	var buf2 bytes.Buffer
	if err := Render(&buf2, again.Models); err != nil || buf2.String() != want {
		t.Errorf("render is not a fixed point:\n%s", buf2.String())
	}
}

func TestDirectHasNoAnalysis(t *testing.T) {
	f := Parse("m/merlin.yaml", []byte(head+"  rollout: {strategy: direct}\n"))
	m := f.Models[0]
	if len(m.Errors) > 0 || m.Spec.Rollout.Analysis != nil || m.Spec.Rollout.Steps != nil {
		t.Fatalf("direct rollout got analysis or steps: %+v %v", m.Spec.Rollout, m.Errors)
	}
	if err := m.CheckComparison("kubernetes", false); err != nil {
		t.Errorf("direct rollout on a target that does not compare: %v", err)
	}
}

func TestExamplesAreValid(t *testing.T) {
	root := filepath.Join("..", "examples")
	files, err := Load(os.DirFS(root))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %d example manifests, want at least 2", len(files))
	}
	for _, f := range files {
		if errs := f.AllErrors(); len(errs) > 0 {
			t.Errorf("%s:\n%v", f.Name, errs)
		}
	}
}

// FuzzParse checks that any input yields either models or positioned
// errors, never a panic, and that every valid model renders to YAML that
// parses back to a valid model of the same name.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		head, head + "---\n" + head, "", "- a\n", "a: [1\n", head + "  rollout: {steps: [10, 50, 100], interval: 30s}\n",
		head + "  replicas: {min: 0, max: 3}\n  env: [{name: A, value: b}]\n",
		"x: &a {y: *a}\n", head + "  rollout:\n    analysis: {maxErrorRate: 1%, minAgreement: 95%}\n",
	} {
		f.Add([]byte(seed))
	}
	matches, _ := filepath.Glob(filepath.Join("..", "examples", "*", FileName))
	for _, m := range matches {
		if data, err := os.ReadFile(m); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file := Parse("f/merlin.yaml", data)
		for _, e := range file.AllErrors() {
			if e.File != "f/merlin.yaml" || e.Line < 1 || e.Column < 1 || e.Message == "" {
				t.Fatalf("badly positioned error: %+v", e)
			}
		}
		for _, m := range file.Models {
			if len(m.Errors) > 0 || len(file.Errors) > 0 {
				continue
			}
			var buf bytes.Buffer
			if err := Render(&buf, []*Model{m}); err != nil {
				t.Fatalf("render valid model: %v", err)
			}
			again := Parse("f/merlin.yaml", buf.Bytes())
			if errs := again.AllErrors(); len(errs) > 0 || len(again.Models) != 1 || again.Models[0].Metadata.Name != m.Metadata.Name {
				t.Fatalf("rendered model does not parse back:\n%s\n%v", buf.String(), errs)
			}
			if strings.Contains(buf.String(), "\x00") {
				t.Fatal("NUL in rendered output")
			}
		}
	})
}

// The daemon persists rollout settings as JSON; they must read back.
func TestJSONRoundTrip(t *testing.T) {
	f := Parse("m/merlin.yaml", []byte(head+"  rollout: {interval: 1m30s, analysis: {maxErrorRate: 0.5%, minAgreement: 95%}}\n"))
	r := f.Models[0].Spec.Rollout
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Rollout
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, r)
	}
}

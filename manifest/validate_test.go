package manifest

import (
	"strings"
	"testing"
	"testing/fstest"
)

// head is a valid manifest's first lines; cases append spec fields to it so
// that line numbers stay easy to read: the line after head is line 9.
const head = `apiVersion: merlin.dev/v1
kind: Model
metadata:
  name: fraud
spec:
  type: sklearn
  source:
    path: ./model
`

// repo holds the model directory the manifests point at.
var repo = fstest.MapFS{
	"models/model/MLmodel":   {Data: []byte("flavors: {}\n")},
	"models/model/model.pkl": {Data: []byte("x")},
	"models/file.txt":        {Data: []byte("x")},
}

// check parses src as models/merlin.yaml and returns its errors formatted
// as "line:col field: message".
func check(t *testing.T, src string) []string {
	t.Helper()
	f := Parse("models/merlin.yaml", []byte(src))
	f.CheckSources(repo, "models")
	var got []string
	for _, e := range f.AllErrors() {
		if e.File != "models/merlin.yaml" {
			t.Errorf("error names file %q, want models/merlin.yaml", e.File)
		}
		got = append(got, strings.TrimPrefix(e.Error(), "models/merlin.yaml:"))
	}
	return got
}

func TestValidateRules(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // "line:col: field: message" (message may be a prefix)
	}{
		{"valid minimal", head, nil},
		{"valid full", head + `  trackingURI: http://mlflow:5000
  protocol: v2
  resources: {cpu: 500m, memory: 1Gi}
  replicas: {min: 0, max: 3}
  env: [{name: LOG_LEVEL, value: info}]
  rollout:
    strategy: canary
    steps: [10, 50, 100]
    interval: 30s
    promotion: manual
    analysis: {minRequests: 50, maxErrorRate: 1%, maxLatencyP99: 250ms, maxLatencyRatio: 1.5, minAgreement: 95%, failureLimit: 2}
  preview: {enabled: false, mirrorPercent: 50}
`, []string{"9:3: spec.trackingURI: trackingURI is only used with source.mlflow"}},

		// Header.
		{"apiVersion missing", strings.Replace(head, "apiVersion: merlin.dev/v1\n", "", 1),
			[]string{"1:1: apiVersion: apiVersion (merlin.dev/v1) is required"}},
		{"apiVersion wrong", strings.Replace(head, "merlin.dev/v1", "merlin.dev/v2", 1),
			[]string{`1:13: apiVersion: unsupported apiVersion "merlin.dev/v2"; use merlin.dev/v1`}},
		{"kind wrong", strings.Replace(head, "kind: Model", "kind: Deployment", 1),
			[]string{`2:7: kind: unsupported kind "Deployment"; use Model`}},
		{"metadata missing", "apiVersion: merlin.dev/v1\nkind: Model\nspec:\n  type: sklearn\n  source: {path: ./model}\n",
			[]string{"1:1: metadata: metadata is required"}},
		{"name missing", strings.Replace(head, "  name: fraud\n", "  labels: {a: b}\n", 1),
			[]string{"3:1: metadata.name: metadata.name is required"}},
		{"name not DNS-1123", strings.Replace(head, "name: fraud", "name: Fraud_Scorer", 1),
			[]string{`4:9: metadata.name: "Fraud_Scorer" must be a DNS-1123 label`}},
		{"name too long", strings.Replace(head, "name: fraud", "name: "+strings.Repeat("a", 41), 1),
			[]string{"4:9: metadata.name: \"" + strings.Repeat("a", 41) + "\" is 41 characters long; at most 40 are allowed"}},
		{"name of 40 is fine", strings.Replace(head, "name: fraud", "name: "+strings.Repeat("a", 40), 1), nil},
		{"label key invalid", strings.Replace(head, "  name: fraud\n", "  name: fraud\n  labels: {\"-bad\": x}\n", 1),
			[]string{`5:12: metadata.labels.-bad: invalid label key "-bad"`}},
		{"label value invalid", strings.Replace(head, "  name: fraud\n", "  name: fraud\n  labels: {team: \"a b\"}\n", 1),
			[]string{`5:18: metadata.labels.team: invalid label value "a b"`}},
		{"spec missing", "apiVersion: merlin.dev/v1\nkind: Model\nmetadata: {name: fraud}\n",
			[]string{"1:1: spec: spec is required"}},

		// Type, source.
		{"type missing", strings.Replace(head, "  type: sklearn\n", "", 1),
			[]string{"5:1: spec.type: spec.type (sklearn | xgboost | pytorch | tensorflow | onnx | pyfunc | custom) is required"}},
		{"type unknown with hint", strings.Replace(head, "type: sklearn", "type: skleran", 1),
			[]string{`6:9: spec.type: "skleran" must be one of sklearn, xgboost, pytorch, tensorflow, onnx, pyfunc, custom (did you mean "sklearn"?)`}},
		{"source missing", strings.Replace(head, "  source:\n    path: ./model\n", "", 1),
			[]string{"5:1: spec.source: spec.source (one of mlflow, path, uri) is required"}},
		{"source empty", strings.Replace(head, "  source:\n    path: ./model\n", "  source: {}\n", 1),
			[]string{"7:3: spec.source: set exactly one of mlflow, path or uri"}},
		{"two sources", head + "    uri: s3://bucket/fraud/\n",
			[]string{"9:5: spec.source.uri: set exactly one of mlflow, path or uri (path is set too)"}},
		{"mlflow runs ok", strings.Replace(head, "path: ./model", "mlflow: runs:/0f3a9c/model", 1) + "  trackingURI: https://mlflow.example.com\n", nil},
		{"mlflow models version ok", strings.Replace(head, "path: ./model", "mlflow: models:/fraud/3", 1), nil},
		{"mlflow models alias ok", strings.Replace(head, "path: ./model", "mlflow: models:/fraud@champion", 1), nil},
		{"mlflow runs without path", strings.Replace(head, "path: ./model", "mlflow: runs:/0f3a9c", 1),
			[]string{`8:13: spec.source.mlflow: invalid MLflow run URI "runs:/0f3a9c"`}},
		{"mlflow models without version", strings.Replace(head, "path: ./model", "mlflow: models:/fraud", 1),
			[]string{`8:13: spec.source.mlflow: invalid MLflow model URI "models:/fraud"`}},
		{"mlflow models stage", strings.Replace(head, "path: ./model", "mlflow: models:/fraud/Production", 1),
			[]string{`8:13: spec.source.mlflow: invalid MLflow model version "Production"`}},
		{"mlflow other scheme", strings.Replace(head, "path: ./model", "mlflow: s3://bucket/x", 1),
			[]string{`8:13: spec.source.mlflow: unsupported MLflow URI "s3://bucket/x"`}},
		{"path absolute", strings.Replace(head, "path: ./model", "path: /srv/model", 1),
			[]string{`8:11: spec.source.path: "/srv/model" must be a slash-separated path relative to this merlin.yaml`}},
		{"path outside repo", strings.Replace(head, "path: ./model", "path: ../../elsewhere", 1),
			[]string{`8:11: spec.source.path: "../../elsewhere" points outside the repository`}},
		{"path missing", strings.Replace(head, "path: ./model", "path: ./nope", 1),
			[]string{`8:11: spec.source.path: "./nope" does not exist`}},
		{"path is a file", strings.Replace(head, "path: ./model", "path: file.txt", 1),
			[]string{`8:11: spec.source.path: "file.txt" is a file; it must be a model directory`}},
		{"uri ok", strings.Replace(head, "path: ./model", "uri: gs://bucket/fraud/", 1), nil},
		{"uri scheme", strings.Replace(head, "path: ./model", "uri: ftp://host/fraud", 1),
			[]string{`8:10: spec.source.uri: unsupported URI "ftp://host/fraud"`}},
		{"uri no bucket", strings.Replace(head, "path: ./model", "uri: s3:///fraud", 1),
			[]string{`8:10: spec.source.uri: URI "s3:///fraud" names no bucket, host or path`}},
		{"trackingURI invalid", strings.Replace(head, "path: ./model", "mlflow: models:/fraud/1", 1) + "  trackingURI: mlflow:5000\n",
			[]string{`9:16: spec.trackingURI: invalid tracking URI "mlflow:5000"`}},

		// Serving.
		{"protocol", head + "  protocol: v3\n",
			[]string{`9:13: spec.protocol: "v3" must be one of v1, v2`}},
		{"custom needs image", strings.Replace(head, "type: sklearn", "type: custom", 1),
			[]string{"5:1: spec.image: type custom needs an image"}},
		{"custom with image ok", strings.Replace(head, "type: sklearn", "type: custom", 1) + "  image: ghcr.io/acme/fraud:1\n", nil},
		{"image forbidden", head + "  image: ghcr.io/acme/fraud:1\n",
			[]string{"9:3: spec.image: image is only for type custom; sklearn models are served by Merlin's model server"}},
		{"quantity invalid", head + "  resources: {cpu: lots, memory: 1Gi}\n",
			[]string{`9:20: spec.resources.cpu: invalid quantity "lots"`}},
		{"quantity zero", head + "  resources:\n    memory: 0\n",
			[]string{"10:13: spec.resources.memory: must be greater than zero, got 0"}},
		{"replicas min negative", head + "  replicas: {min: -1, max: 2}\n",
			[]string{"9:19: spec.replicas.min: must not be negative, got -1"}},
		{"replicas max zero", head + "  replicas: {min: 0, max: 0}\n",
			[]string{"9:27: spec.replicas.max: must be at least 1, got 0"}},
		{"replicas min above max", head + "  replicas:\n    min: 3\n    max: 2\n",
			[]string{"10:10: spec.replicas.min: min (3) must not exceed max (2)"}},
		{"env name invalid", head + "  env:\n  - name: 1BAD\n    value: x\n",
			[]string{`10:11: spec.env[0].name: invalid environment variable name "1BAD"`}},
		{"env duplicate", head + "  env:\n  - {name: A, value: x}\n  - {name: A, value: y}\n",
			[]string{`11:12: spec.env[1].name: duplicate environment variable "A" (also spec.env[0])`}},
		{"env without name", head + "  env:\n  - value: x\n",
			[]string{"10:5: spec.env[0]: env entries need a name"}},
		{"env value not a string", head + "  env:\n  - name: WORKERS\n    value: 4\n",
			[]string{`11:12: spec.env[0].value: expected a string, got an integer 4 (quote it: "4")`}},

		// Rollout.
		{"strategy", head + "  rollout: {strategy: linear}\n",
			[]string{`9:23: spec.rollout.strategy: "linear" must be one of canary, blueGreen, shadow, direct`}},
		{"shadow ok", head + "  rollout: {strategy: shadow, mirrorPercent: 50, interval: 10s}\n", nil},
		{"mirrorPercent for canary", head + "  rollout:\n    mirrorPercent: 50\n",
			[]string{"10:5: spec.rollout.mirrorPercent: mirrorPercent only applies to strategies shadow and blueGreen"}},
		{"mirrorPercent out of range", head + "  rollout: {strategy: blueGreen, mirrorPercent: 0}\n",
			[]string{"9:49: spec.rollout.mirrorPercent: must be from 1 to 100, got 0"}},
		{"progressDeadline too short", head + "  rollout:\n    progressDeadline: 1s\n",
			[]string{"10:23: spec.rollout.progressDeadline: must be at least 5s, got 1s"}},
		{"steps not increasing", head + "  rollout:\n    steps: [10, 50, 50, 100]\n",
			[]string{"10:21: spec.rollout.steps[2]: steps must be strictly increasing: 50 follows 50"}},
		{"steps not ending at 100", head + "  rollout:\n    steps:\n    - 10\n    - 80\n",
			[]string{"12:7: spec.rollout.steps[1]: the last step must be 100, got 80"}},
		{"step out of range", head + "  rollout:\n    steps: [0, 100]\n",
			[]string{"10:13: spec.rollout.steps[0]: step 0 is out of range: steps are traffic percentages from 1 to 100"}},
		{"step above 100", head + "  rollout:\n    steps: [50, 150]\n",
			[]string{"10:17: spec.rollout.steps[1]: step 150 is out of range: steps are traffic percentages from 1 to 100"}},
		{"steps empty", head + "  rollout:\n    steps: []\n",
			[]string{"10:12: spec.rollout.steps: must list at least one step, ending at 100"}},
		{"steps for blueGreen", head + "  rollout:\n    strategy: blueGreen\n    steps: [50, 100]\n",
			[]string{"11:5: spec.rollout.steps: steps only apply to strategy canary; blueGreen moves all traffic at once"}},
		{"analysis with direct", head + "  rollout:\n    strategy: direct\n    analysis: {minRequests: 10}\n",
			[]string{"11:5: spec.rollout.analysis: analysis has no effect with strategy direct"}},
		{"interval too short", head + "  rollout:\n    interval: 2s\n",
			[]string{"10:15: spec.rollout.interval: must be at least 5s, got 2s"}},
		{"interval without unit", head + "  rollout:\n    interval: 30\n",
			[]string{"10:15: spec.rollout.interval: duration 30 needs a unit, e.g. 30s"}},
		{"interval invalid", head + "  rollout:\n    interval: soon\n",
			[]string{`10:15: spec.rollout.interval: invalid duration "soon"`}},
		{"promotion", head + "  rollout:\n    promotion: later\n",
			[]string{`10:16: spec.rollout.promotion: "later" must be one of auto, manual`}},
		{"minRequests zero", head + "  rollout:\n    analysis:\n      minRequests: 0\n",
			[]string{"11:20: spec.rollout.analysis.minRequests: must be at least 1, got 0"}},
		{"percent without sign", head + "  rollout:\n    analysis:\n      maxErrorRate: 0.01\n",
			[]string{`11:21: spec.rollout.analysis.maxErrorRate: percentage "0.01" needs a % sign, e.g. 0.01%`}},
		{"percent above 100", head + "  rollout:\n    analysis:\n      minAgreement: 101%\n",
			[]string{"11:21: spec.rollout.analysis.minAgreement: must be from 0% to 100%, got 101%"}},
		{"zero error rate allowed", head + "  rollout:\n    analysis:\n      maxErrorRate: 0%\n", nil},
		{"latency p99 zero", head + "  rollout:\n    analysis:\n      maxLatencyP99: 0s\n",
			[]string{"11:22: spec.rollout.analysis.maxLatencyP99: must be greater than zero (leave it out for no bound)"}},
		{"latency ratio zero", head + "  rollout:\n    analysis:\n      maxLatencyRatio: 0\n",
			[]string{"11:24: spec.rollout.analysis.maxLatencyRatio: must be greater than zero, got 0"}},
		{"failureLimit zero", head + "  rollout:\n    analysis:\n      failureLimit: 0\n",
			[]string{"11:21: spec.rollout.analysis.failureLimit: must be at least 1, got 0"}},
		{"mirrorPercent", head + "  preview: {mirrorPercent: 0}\n",
			[]string{"9:28: spec.preview.mirrorPercent: must be from 1 to 100, got 0"}},
		{"preview enabled not bool", head + "  preview: {enabled: yes please}\n",
			[]string{"9:22: spec.preview.enabled: expected a boolean, got a string yes please"}},

		// Strict decoding.
		{"unknown top-level field", head + "status: {}\n",
			[]string{`9:1: status: unknown field "status" in the document`}},
		{"unknown nested field with hint", head + "  rollout:\n    stepz: [10, 100]\n",
			[]string{`10:5: spec.rollout.stepz: unknown field "stepz" in spec.rollout (did you mean "steps"?)`}},
		{"case typo hint", strings.Replace(head, "  type: sklearn\n", "  type: sklearn\n  trackingUri: http://x\n", 1),
			[]string{`7:3: spec.trackingUri: unknown field "trackingUri" in spec (did you mean "trackingURI"?)`}},
		{"duplicate key", head + "  type: xgboost\n",
			[]string{`9:3: spec.type: duplicate key "type" (first set at line 6)`}},
		{"mapping expected", head + "  rollout: canary\n",
			[]string{"9:12: spec.rollout: expected a mapping, got a string canary"}},
		{"list expected", head + "  rollout:\n    steps: 100\n",
			[]string{"10:12: spec.rollout.steps: expected a list, got an integer 100"}},
		{"integer expected", head + "  replicas: {min: one}\n",
			[]string{"9:19: spec.replicas.min: expected an integer, got a string one"}},
		{"merge key", head + "  rollout:\n    <<: {strategy: direct}\n",
			[]string{"10:5: spec.rollout: YAML merge keys (<<) are not supported; write the fields out"}},
		{"aliases resolve", "x: &src {path: ./model}\n" + strings.Replace(head, "  source:\n    path: ./model\n", "  source: *src\n", 1),
			[]string{`1:1: x: unknown field "x" in the document`}},
		{"every error reported", head + "  protocol: v9\n  replicas: {min: -1}\n  rollout:\n    interval: 1s\n",
			[]string{
				`9:13: spec.protocol: "v9" must be one of v1, v2`,
				"10:19: spec.replicas.min: must not be negative, got -1",
				"12:15: spec.rollout.interval: must be at least 5s, got 1s",
			}},

		// Document structure and syntax.
		{"document not a mapping", "- a\n- b\n",
			[]string{"1:1: a merlin.yaml document must be a mapping (apiVersion, kind, metadata, spec), got a list"}},
		{"syntax: mapping in plain scalar", head + "  protocol: v1: v2\n",
			[]string{"9:13: invalid YAML: mapping value is not allowed in this context"}},
		{"syntax: tab indentation", head + "\tprotocol: v1\n",
			[]string{"9:1: invalid YAML: found character '\t' that cannot start any token"}},
		{"syntax: unclosed flow", head + "  rollout: {steps: [10, 100}\n",
			[]string{"9:28: invalid YAML: ',' or ']' must be specified"}},
		{"syntax: unterminated quote", head + "  image: 'oops\n",
			[]string{"9:10: invalid YAML: could not find end character of single-quoted text"}},
		{"syntax in second document", head + "---\n" + head + "  rollout: {steps: [1\n",
			[]string{"18:20: invalid YAML: sequence end token ']' not found"}},
		{"empty file", "", nil},
		{"comment only and trailing separator", "# nothing yet\n---\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := check(t, tt.src)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n got: %s\nwant: %s", len(got), len(tt.want), strings.Join(got, "\n      "), strings.Join(tt.want, "\n      "))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("error %d:\n got: %s\nwant: %s", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestDuplicateNames(t *testing.T) {
	a := Parse("a/merlin.yaml", []byte(head))
	b := Parse("b/merlin.yaml", []byte("# another team's copy\n"+head+"---\n"+strings.Replace(head, "fraud", "churn", 1)+"---\n"+strings.Replace(head, "fraud", "churn", 1)))
	CheckUnique([]*File{a, b})
	if errs := a.AllErrors(); len(errs) != 0 {
		t.Fatalf("first declaration got errors: %v", errs)
	}
	want := []string{
		`b/merlin.yaml:5:9: metadata.name: duplicate model name "fraud" (first declared at a/merlin.yaml:4:9)`,
		`b/merlin.yaml:23:9: metadata.name: duplicate model name "churn" (first declared at b/merlin.yaml:14:9)`,
	}
	got := b.AllErrors()
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].Error() != want[i] {
			t.Errorf("got  %s\nwant %s", got[i], want[i])
		}
	}
	if got[0].Model != "fraud" || b.Models[0].Errors == nil || b.Models[1].Errors != nil {
		t.Errorf("errors must belong to the duplicate model only: %+v", b.Models)
	}
}

func TestTooLarge(t *testing.T) {
	f := Parse("big/merlin.yaml", make([]byte, MaxFileSize+1))
	if len(f.Errors) != 1 || !strings.Contains(f.Errors[0].Error(), "big/merlin.yaml:1:1: file is larger than") {
		t.Fatalf("got %v", f.Errors)
	}
}

func TestAliasBomb(t *testing.T) {
	src := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g"} {
		src += n + ": &" + n + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
		prev = n
	}
	f := Parse("bomb/merlin.yaml", []byte(src))
	if len(f.AllErrors()) == 0 {
		t.Fatal("expected errors")
	}
}

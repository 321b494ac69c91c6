package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// canary is a real local target serving iris as an 80/20 canary (two
// versions of the iris example, two real model servers) behind its router.
type canary struct {
	l              *Local
	url            string
	stable, canary string
}

func startCanary(t *testing.T) *canary {
	t.Helper()
	model := irisModel(t)
	l := newTestLocal(t, t.TempDir())
	t.Cleanup(func() { l.Close() })
	s, c := testVersion("iris", 1, model), testVersion("iris", 2, model)
	d := serving.Deployment{Model: "iris", Versions: []serving.Version{s, c}, Traffic: map[string]int{s.ID: 80, c.ID: 20}}
	if err := l.Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Minute, "both versions ready at 80/20", func() bool {
		ms := servingtest.StatusOf(t, l, "iris")
		a, _ := ms.Version(s.ID)
		b, _ := ms.Version(c.ID)
		return a.Ready() && b.Ready() && a.Weight == 80 && b.Weight == 20
	})
	srv := httptest.NewServer(l)
	t.Cleanup(srv.Close)
	return &canary{l: l, url: srv.URL, stable: s.ID, canary: c.ID}
}

// answer is one real response of the router.
type answer struct {
	code   int
	header http.Header
	raw    []byte
	json   map[string]any // nil when the body is not a JSON object
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.code, bytes.TrimSpace(a.raw)) }

func (f *canary) do(t *testing.T, method, path, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{code: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &a.json)
	return a
}

const (
	irisRow   = `[5.1, 3.5, 1.4, 0.2]`
	irisInfer = `{"id": "42", "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ` + irisRow + `}]}`
)

// oipCase is one request and what the Open Inference Protocol says of its
// answer: the status, the operation of open_inference_rest.yaml and the
// component schema it must satisfy, and what the prose
// (inference_rest.md, required_api.md) adds.
type oipCase struct {
	name               string
	method, path, body string
	code               int
	op                 string // path of the operation in the spec, "" for none
	schema             string // component schema of the body, "" for none
	check              func(answer) error
}

// isError is the prose's rule for every failure: an HTTP error status and
// a body {"error": $string}.
func isError(a answer) error {
	if msg, _ := a.json["error"].(string); a.code < 400 || msg == "" {
		return errors.New(`want an error status and {"error": $string}`)
	}
	return nil
}

func field(key string, want any) func(answer) error {
	return func(a answer) error {
		if got := a.json[key]; fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("%s = %v, want %v", key, got, want)
		}
		return nil
	}
}

func all(checks ...func(answer) error) func(answer) error {
	return func(a answer) error {
		var errs []error
		for _, c := range checks {
			errs = append(errs, c(a))
		}
		return errors.Join(errs...)
	}
}

// conform checks an answer against the spec.
func conform(doc *openapi3.T, c oipCase, a answer) error {
	var errs []error
	if a.code != c.code {
		errs = append(errs, fmt.Errorf("status %d, want %d", a.code, c.code))
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		errs = append(errs, fmt.Errorf("Content-Type %q", ct))
	}
	if c.op != "" {
		item := doc.Paths.Find(c.op)
		op := item.GetOperation(c.method)
		req := httptest.NewRequest(c.method, c.path, nil)
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{
				Request: req, Route: &routers.Route{Spec: doc, Path: c.op, PathItem: item, Method: c.method, Operation: op},
			},
			Status: a.code, Header: a.header, Body: io.NopCloser(bytes.NewReader(a.raw)),
			Options: &openapi3filter.Options{IncludeResponseStatus: false},
		}
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", c.method, c.op, err))
		}
	}
	if c.schema != "" {
		var v any
		if err := json.Unmarshal(a.raw, &v); err != nil {
			errs = append(errs, fmt.Errorf("body is not JSON: %w", err))
		} else if err := doc.Components.Schemas[c.schema].Value.VisitJSON(v); err != nil {
			errs = append(errs, fmt.Errorf("schema %s: %w", c.schema, err))
		}
	}
	if c.check != nil {
		errs = append(errs, c.check(a))
	}
	return errors.Join(errs...)
}

func loadOIP(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile("../../testdata/oip/open_inference_rest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the OIP description does not validate: %v", err)
	}
	for _, s := range []string{"metadata_server_response", "metadata_model_response", "metadata_model_error_response", "inference_response", "inference_error_response"} {
		if doc.Components.Schemas[s] == nil {
			t.Fatalf("the OIP description has no schema %s", s)
		}
	}
	return doc
}

// TestProtocol drives a real 80/20 canary of iris through the router: the
// Open Inference Protocol's cases validated against its OpenAPI
// description, then one subtest per item of issue 11's protocol section.
func TestProtocol(t *testing.T) {
	requireSklearn(t)
	doc := loadOIP(t)
	f := startCanary(t)
	both := []string{f.stable, f.canary}
	const (
		meta   = "/v2/models/${MODEL_NAME}/versions/${MODEL_VERSION}"
		infer  = meta + "/infer"
		ready  = meta + "/ready"
		nover  = "iris-00000000"
		bytesT = `{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}`
	)
	versions := func(a answer) error {
		if got := fmt.Sprint(a.json["versions"]); got != fmt.Sprint(both) {
			return fmt.Errorf("versions %s, want the versions taking traffic %v", got, both)
		}
		return nil
	}
	tensors := func(a answer) error {
		in, _ := a.json["inputs"].([]any)
		out, _ := a.json["outputs"].([]any)
		if len(in) != 1 || len(out) != 1 {
			return fmt.Errorf("inputs %v outputs %v, want iris's signature", a.json["inputs"], a.json["outputs"])
		}
		return nil
	}
	servedBy := func(ids ...string) func(answer) error {
		return func(a answer) error {
			if v, _ := a.json["model_version"].(string); !slices.Contains(ids, v) || a.header.Get(VersionHeader) != v {
				return fmt.Errorf("model_version %q, %s %q; want one of %v", v, VersionHeader, a.header.Get(VersionHeader), ids)
			}
			return nil
		}
	}
	outputs := func(names ...string) func(answer) error {
		return func(a answer) error {
			var got []string
			for _, o := range a.json["outputs"].([]any) {
				got = append(got, o.(map[string]any)["name"].(string))
			}
			if !slices.Equal(got, names) {
				return fmt.Errorf("outputs %v, want %v", got, names)
			}
			return nil
		}
	}

	t.Run("OIPConformance", func(t *testing.T) {
		cases := []oipCase{
			{"server live", "GET", "/v2/health/live", "", 200, "/v2/health/live", "", field("live", true)},
			{"server ready", "GET", "/v2/health/ready", "", 200, "/v2/health/ready", "", field("ready", true)},
			{"server metadata", "GET", "/v2", "", 200, "/v2/", "metadata_server_response", field("name", ServerName)},
			{"server metadata, slash", "GET", "/v2/", "", 200, "/v2/", "metadata_server_response", nil},
			{"model metadata", "GET", "/v2/models/iris", "", 200, meta, "metadata_model_response",
				all(field("name", "iris"), field("platform", "sklearn"), versions, tensors)},
			{"model metadata, versioned", "GET", "/v2/models/iris/versions/" + f.canary, "", 200, meta, "metadata_model_response",
				all(field("name", "iris"), versions)},
			{"model ready", "GET", "/v2/models/iris/ready", "", 200, ready, "", all(field("name", "iris"), field("ready", true))},
			{"model ready, versioned", "GET", "/v2/models/iris/versions/" + f.stable + "/ready", "", 200, ready, "", field("ready", true)},
			{"infer", "POST", "/v2/models/iris/infer", irisInfer, 200, infer, "inference_response",
				all(field("model_name", "iris"), field("id", "42"), servedBy(both...), outputs("predict"))},
			{"infer, versioned", "POST", "/v2/models/iris/versions/" + f.canary + "/infer", irisInfer, 200, infer, "inference_response",
				servedBy(f.canary)},
			{"infer, output requested", "POST", "/v2/models/iris/infer",
				strings.Replace(irisInfer, `"id": "42",`, `"outputs": [{"name": "predict"}],`, 1), 200, infer, "inference_response", outputs("predict")},
			{"infer, unknown output", "POST", "/v2/models/iris/infer",
				strings.Replace(irisInfer, `"id": "42",`, `"outputs": [{"name": "proba"}],`, 1), 400, infer, "inference_error_response", isError},
			{"infer, BYTES tensor", "POST", "/v2/models/iris/infer", bytesT, 400, infer, "inference_error_response", isError},
			{"infer, not JSON", "POST", "/v2/models/iris/infer", `{"inputs": [`, 400, infer, "inference_error_response", isError},
			{"infer, unknown datatype", "POST", "/v2/models/iris/infer", strings.Replace(irisInfer, "FP64", "FP99", 1), 400, infer, "inference_error_response", isError},
			{"infer, shape and data disagree", "POST", "/v2/models/iris/infer", strings.Replace(irisInfer, "[1, 4]", "[2, 4]", 1), 400, infer, "inference_error_response", isError},
			{"infer, numeric id", "POST", "/v2/models/iris/infer", strings.Replace(irisInfer, `"42"`, `42`, 1), 400, infer, "inference_error_response", isError},
			{"infer, no inputs", "POST", "/v2/models/iris/infer", `{"id": "1"}`, 400, infer, "inference_error_response", isError},
			{"unknown model, metadata", "GET", "/v2/models/nope", "", 404, "", "metadata_model_error_response", isError},
			{"unknown model, infer", "POST", "/v2/models/nope/infer", irisInfer, 404, infer, "inference_error_response", isError},
			{"unknown model, ready", "GET", "/v2/models/nope/ready", "", 404, ready, "", isError},
			{"unknown version, metadata", "GET", "/v2/models/iris/versions/" + nover, "", 404, "", "metadata_model_error_response", isError},
			{"unknown version, infer", "POST", "/v2/models/iris/versions/" + nover + "/infer", irisInfer, 404, infer, "inference_error_response", isError},
			{"unknown version, ready", "GET", "/v2/models/iris/versions/" + nover + "/ready", "", 404, ready, "", isError},
		}
		passed := 0
		for _, c := range cases {
			a := f.do(t, c.method, c.path, c.body)
			if err := conform(doc, c, a); err != nil {
				t.Errorf("%s (%s %s): %v\n\tgot %s", c.name, c.method, c.path, err, a)
				continue
			}
			passed++
		}
		t.Logf("OIP conformance: %d/%d cases", passed, len(cases))
	})

	// Item 14: the server-level endpoints exist and say what they should.
	t.Run("14_ServerEndpoints", func(t *testing.T) {
		for _, c := range []struct {
			method, path string
			code         int
			body         string
		}{
			{"GET", "/v2/health/live", 200, `{"live":true}`},
			{"GET", "/v2/health/ready", 200, `{"ready":true}`},
			{"GET", "/v1/models", 200, `{"models":["iris"]}`},
			{"GET", "/v2", 200, `{"extensions":[],"name":"merlin","version":"dev"}`},
			{"POST", "/v2/health/ready", 405, `{"error":"use GET for /v2/health/ready"}`},
			{"GET", "/v3/models/iris", 404, `{"error":"no such endpoint: /v3/models/iris; use /v1/models/NAME:predict or /v2/models/NAME/infer"}`},
		} {
			a := f.do(t, c.method, c.path, "")
			if a.code != c.code || string(bytes.TrimSpace(a.raw)) != c.body {
				t.Errorf("%s %s: %s; want %d %s", c.method, c.path, a, c.code, c.body)
			}
		}
	})

	// Item 15: a versioned request reaches its version, whatever the split;
	// model metadata lists the same versions whichever version answers.
	t.Run("15_VersionedRouting", func(t *testing.T) {
		for _, id := range both {
			for range 20 {
				a := f.do(t, "POST", "/v2/models/iris/versions/"+id+"/infer", irisInfer)
				if err := servedBy(id)(a); a.code != 200 || err != nil {
					t.Fatalf("infer for %s: %s (%v)", id, a, err)
				}
			}
		}
		seen := map[string]bool{}
		for range 20 {
			a := f.do(t, "GET", "/v2/models/iris", "")
			seen[a.header.Get(VersionHeader)] = true
			if err := versions(a); a.code != 200 || err != nil {
				t.Fatalf("metadata: %s (%v)", a, err)
			}
		}
		t.Logf("metadata answered by %v", seen)
		a := f.do(t, "POST", "/v2/models/iris/versions/"+nover+"/infer", irisInfer)
		want := fmt.Sprintf(`model "iris" has no version %q taking traffic (versions: %s, %s)`, nover, f.stable, f.canary)
		if a.code != 404 || a.json["error"] != want {
			t.Errorf("unknown version: %s; want 404 %s", a, want)
		}
	})

	// Item 16: what a client gets wrong is a 4xx, never a 5xx that would
	// count against the canary in its analysis.
	t.Run("16_ClientErrorsAre4xx", func(t *testing.T) {
		errs := func() (n uint64) {
			for _, id := range both {
				n += f.l.stats.Lookup(id).Snapshot(time.Now()).Errors
			}
			return n
		}
		before := errs()
		for _, c := range []struct {
			name, method, path, body string
			code                     int
			msg                      string
		}{
			{"V2 BYTES tensor", "POST", "/v2/models/iris/versions/" + f.canary + "/infer", bytesT, 400, "the model cannot use this input"},
			{"V1 string features", "POST", "/v1/models/iris:predict", `{"instances": [["a", "b", "c", "d"]]}`, 400, "the model cannot use this input"},
			{"V1 NaN", "POST", "/v1/models/iris:predict", `{"instances": [[NaN, 3.5, 1.4, 0.2]]}`, 400, "the model cannot use this input"},
			{"unknown output", "POST", "/v2/models/iris/infer", strings.Replace(irisInfer, `"id": "42",`, `"outputs": [{"name": "proba"}],`, 1), 400,
				`unknown output "proba": this model produces "predict"`},
			{":explain", "POST", "/v1/models/iris:explain", `{"instances": [` + irisRow + `]}`, 501, "no explainer"},
			{":explain with GET", "GET", "/v1/models/iris:explain", "", 405, "use POST"},
		} {
			a := f.do(t, c.method, c.path, c.body)
			if msg, _ := a.json["error"].(string); a.code != c.code || !strings.Contains(msg, c.msg) {
				t.Errorf("%s: %s; want %d with an error saying %q", c.name, a, c.code, c.msg)
			}
		}
		if n := errs() - before; n != 0 {
			t.Errorf("the versions counted %d server errors for client mistakes", n)
		}
	})

	// Item 17: X-Merlin-Version names the version on every answer a
	// version was chosen for, and is absent, always, where none was.
	t.Run("17_VersionHeader", func(t *testing.T) {
		for _, c := range []struct {
			method, path, body string
			want               []string // nil: no header
		}{
			{"GET", "/v1/models/iris", "", both},
			{"POST", "/v1/models/iris:predict", `{"instances": [` + irisRow + `]}`, both},
			{"POST", "/v1/models/iris:predict", `{"instances": [["a", "b", "c", "d"]]}`, both},
			{"POST", "/v1/models/iris:explain", `{"instances": [` + irisRow + `]}`, both},
			{"POST", "/v2/models/iris/infer", irisInfer, both},
			{"POST", "/v2/models/iris/infer", bytesT, both},
			{"GET", "/v2/models/iris", "", both},
			{"GET", "/v2/models/iris/ready", "", both},
			{"GET", "/v2/models/iris/versions/" + f.canary, "", []string{f.canary}},
			{"POST", "/v2/models/iris/versions/" + f.stable + "/infer", irisInfer, []string{f.stable}},
			{"GET", "/v2/health/live", "", nil},
			{"GET", "/v2/health/ready", "", nil},
			{"GET", "/v2", "", nil},
			{"GET", "/v1/models", "", nil},
			{"GET", "/nope", "", nil},
			{"GET", "/v2/models/nope", "", nil},
			{"POST", "/v1/models/nope:predict", "{}", nil},
			{"GET", "/v2/models/iris/versions/" + nover, "", nil},
		} {
			a := f.do(t, c.method, c.path, c.body)
			got, set := a.header[VersionHeader]
			switch {
			case c.want == nil && set:
				t.Errorf("%s %s: %s %v; want none (no version answers)", c.method, c.path, VersionHeader, got)
			case c.want != nil && (len(got) != 1 || !slices.Contains(c.want, got[0])):
				t.Errorf("%s %s: %s %v; want one of %v", c.method, c.path, VersionHeader, got, c.want)
			}
		}
		a := f.do(t, "GET", "/v2/models/iris", "")
		if err := all(field("platform", "sklearn"), tensors)(a); err != nil {
			t.Errorf("metadata %s: %v", a, err)
		}
	})

	// Item 14: server-ready is false (a 4xx, as OIP says) while a deployed
	// model cannot serve, and true again once it is gone.
	t.Run("14_ServerNotReady", func(t *testing.T) {
		v := testVersion("broken", 1, brokenModel(t, irisModel(t)))
		d := serving.Deployment{Model: "broken", Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}
		if err := f.l.Apply(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		var a answer
		poll.Until(t, time.Minute, "server not ready", func() bool {
			a = f.do(t, "GET", "/v2/health/ready", "")
			return a.code != 200
		})
		if a.code != 400 || a.json["ready"] != false || a.json["error"] != "no version can serve broken" {
			t.Errorf("server ready with a broken model: %s; want 400 ready false naming it", a)
		}
		if a = f.do(t, "GET", "/v2/models/broken/ready", ""); a.code != 400 || a.json["ready"] != false {
			t.Errorf("model ready of the broken model: %s; want 400 ready false", a)
		}
		if a = f.do(t, "GET", "/v1/models", ""); string(bytes.TrimSpace(a.raw)) != `{"models":["broken","iris"]}` {
			t.Errorf("model list: %s", a)
		}
		if err := f.l.Delete(context.Background(), "broken"); err != nil {
			t.Fatal(err)
		}
		if a = f.do(t, "GET", "/v2/health/ready", ""); a.code != 200 || a.json["ready"] != true {
			t.Errorf("server ready once the broken model is deleted: %s", a)
		}
	})
}

func TestV2Path(t *testing.T) {
	for _, c := range []struct {
		path, version, rest string
		ok                  bool
	}{
		{"/v2/models/iris", "", "", true},
		{"/v2/models/iris/ready", "", "ready", true},
		{"/v2/models/iris/infer", "", "infer", true},
		{"/v2/models/iris/versions/iris-1a2b3c4d", "iris-1a2b3c4d", "", true},
		{"/v2/models/iris/versions/iris-1a2b3c4d/infer", "iris-1a2b3c4d", "infer", true},
		{"/v2/models/iris/versions/iris-1a2b3c4d/ready", "iris-1a2b3c4d", "ready", true},
		{"/v1/models/iris:predict", "", "", false},
		{"/v2/health/ready", "", "", false},
	} {
		version, rest, ok := v2Path(c.path)
		if version != c.version || rest != c.rest || ok != c.ok {
			t.Errorf("v2Path(%q) = %q, %q, %v; want %q, %q, %v", c.path, version, rest, ok, c.version, c.rest, c.ok)
		}
	}
}

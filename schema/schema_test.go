package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	yaml "go.yaml.in/yaml/v3"
)

func TestSchemaIsCurrent(t *testing.T) {
	got, err := Generate(filepath.Join("..", "manifest"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, JSON) {
		t.Fatal("schema/merlin.schema.json is stale: run `go generate ./schema` (or `make generate`)")
	}
}

func compile(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(JSON))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(ID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(ID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// documents converts each YAML document of a manifest to a JSON value, as
// an editor's YAML language server does before applying the schema.
func documents(t *testing.T, data []byte) []any {
	t.Helper()
	var docs []any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var v any
		if err := dec.Decode(&v); errors.Is(err, io.EOF) {
			return docs
		} else if err != nil {
			t.Fatal(err)
		}
		js, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, inst)
	}
}

func TestExamplesValidateAgainstSchema(t *testing.T) {
	s := compile(t)
	matches, err := filepath.Glob(filepath.Join("..", "examples", "*", "merlin.yaml"))
	if err != nil || len(matches) < 2 {
		t.Fatalf("examples: %v %v", matches, err)
	}
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(t, data) {
			if err := s.Validate(doc); err != nil {
				t.Errorf("%s document %d: %v", m, i, err)
			}
		}
	}
}

func TestSchemaRejectsMistakes(t *testing.T) {
	s := compile(t)
	base := "apiVersion: merlin.dev/v1\nkind: Model\nmetadata: {name: fraud}\nspec:\n  type: sklearn\n  source: {path: ./model}\n"
	for name, src := range map[string]string{
		"unknown field":    base + "  replicaz: 3\n",
		"bad type":         strings.Replace(base, "sklearn", "scikit", 1),
		"percent w/o %":    base + "  rollout: {analysis: {maxErrorRate: 0.01}}\n",
		"duration w/o s":   base + "  rollout: {interval: 30}\n",
		"missing source":   strings.Replace(base, "  source: {path: ./model}\n", "", 1),
		"name uppercase":   strings.Replace(base, "fraud", "Fraud", 1),
		"bad mirror pct":   base + "  preview: {mirrorPercent: 101}\n",
		"wrong apiVersion": strings.Replace(base, "v1", "v2", 1),
	} {
		if err := s.Validate(documents(t, []byte(src))[0]); err == nil {
			t.Errorf("%s: schema accepted it", name)
		}
	}
}

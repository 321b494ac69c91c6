// Package schema publishes the JSON Schema of merlin.yaml for editors and
// CI tools. The schema is generated from the Go types of package manifest
// (`go generate ./schema`), and a test fails when the checked-in copy is
// stale.
package schema

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/invopop/jsonschema"

	"merlin.dev/merlin/manifest"
)

//go:generate go run ./gen -o merlin.schema.json

// ID is where the schema is published.
const ID = "https://merlin.dev/schemas/merlin.schema.json"

// JSON is the checked-in schema.
//
//go:embed merlin.schema.json
var JSON []byte

// manifestPkg is the import path whose doc comments become descriptions.
const manifestPkg = "merlin.dev/merlin/manifest"

// Generate builds the schema from the manifest types. manifestDir is the
// directory holding package manifest's source, read for doc comments.
func Generate(manifestDir string) ([]byte, error) {
	// The comment extractor keys comments by the directory it walks, so
	// walk with an empty base and rename the keys to the import path.
	walk := &jsonschema.Reflector{}
	if err := walk.AddGoComments("", filepath.ToSlash(manifestDir)); err != nil {
		return nil, fmt.Errorf("read doc comments in %s: %w", manifestDir, err)
	}
	prefix := path.Clean(filepath.ToSlash(manifestDir)) + "."
	r := &jsonschema.Reflector{
		RequiredFromJSONSchemaTags: true,
		ExpandedStruct:             true,
		CommentMap:                 map[string]string{},
	}
	keys := yamlNames(reflect.TypeFor[manifest.Model](), map[string]string{})
	for k, v := range walk.CommentMap {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			r.CommentMap[manifestPkg+"."+rest] = describe(v, keys[rest])
		}
	}
	s := r.Reflect(&manifest.Model{})
	s.ID = ID
	s.Title = "Merlin model manifest (merlin.yaml)"
	s.Description = "One document per model. Generated from merlin.dev/merlin/manifest; do not edit."
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return nil, fmt.Errorf("encode schema: %w", err)
	}
	return buf.Bytes(), nil
}

// yamlNames maps "Type.Field" to the field's YAML key for every struct
// reachable from t.
func yamlNames(t reflect.Type, names map[string]string) map[string]string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || names[t.Name()] != "" {
		return names
	}
	names[t.Name()] = t.Name() // visited
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || key == "-" {
			continue
		}
		names[t.Name()+"."+f.Name] = key
		yamlNames(f.Type, names)
	}
	return names
}

// describe turns a Go doc comment into a schema description: one line, and
// naming the YAML key rather than the Go field ("MinRequests is" →
// "minRequests is").
func describe(comment, key string) string {
	text := strings.Join(strings.Fields(comment), " ")
	if key == "" {
		return text
	}
	if first, rest, ok := strings.Cut(text, " "); ok && strings.EqualFold(first, key) {
		return key + " " + rest
	}
	return text
}

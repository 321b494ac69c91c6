package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	goccy "github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
	yaml "go.yaml.in/yaml/v3"
)

// MaxFileSize bounds a manifest file; larger files are rejected unread.
const MaxFileSize = 1 << 20

// File is one parsed merlin.yaml.
type File struct {
	// Name is the file's path as shown in errors.
	Name string
	// Models are the documents that decoded to a model, valid or not: check
	// each model's Errors.
	Models []*Model
	// Errors are problems that belong to no single model: YAML syntax
	// errors and documents that are not mappings. When a file has them,
	// none of its models can be trusted.
	Errors ErrorList
}

// AllErrors returns every problem in the file, sorted by position.
func (f *File) AllErrors() ErrorList {
	all := append(ErrorList(nil), f.Errors...)
	for _, m := range f.Models {
		all = append(all, m.Errors...)
	}
	all.Sort()
	return all
}

// Parse reads a merlin.yaml, applies defaults and checks every rule that
// needs nothing but the file itself. It never fails: problems are reported
// in the returned File. name is used in error messages.
func Parse(name string, data []byte) *File {
	f := &File{Name: name}
	if len(data) > MaxFileSize {
		f.Errors = ErrorList{tooLarge(name)}
		return f
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.Errors = append(f.Errors, syntaxError(name, data, err))
			break
		}
		if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue // an empty document, e.g. after a trailing ---
		}
		if root.Kind != yaml.MappingNode {
			f.Errors = append(f.Errors, &Error{File: name, Line: root.Line, Column: root.Column,
				Message: fmt.Sprintf("a merlin.yaml document must be a mapping (apiVersion, kind, metadata, spec), got %s", kindName(root))})
			continue
		}
		f.Models = append(f.Models, decodeModel(name, root))
	}
	return f
}

func tooLarge(name string) *Error {
	return &Error{File: name, Line: 1, Column: 1, Message: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}
}

func decodeModel(name string, root *yaml.Node) *Model {
	d := newDecoder(name)
	m := &Model{File: name}
	d.decode(root, reflect.ValueOf(m).Elem(), "", posOf(root))
	m.fields = Fields{file: name, pos: d.fields}
	m.Errors = d.errs
	m.bad = map[string]bool{}
	for _, e := range d.errs {
		m.bad[e.Field] = true
	}
	applyDefaults(m)
	m.Errors = append(m.Errors, validate(m)...)
	for _, e := range m.Errors {
		e.Model = m.Metadata.Name
	}
	m.Errors.Sort()
	return m
}

// Set reports whether a field path (spec.rollout.steps) was written in the
// YAML, as opposed to defaulted.
func (m *Model) Set(field string) bool { return m.fields.Set(field) }

// Pos returns the position of a field's value in the YAML (see Fields.Pos).
func (m *Model) Pos(field string) Pos { return m.fields.Pos(field) }

// KeyPos returns the position of a field's key, falling back like Pos.
func (m *Model) KeyPos(field string) Pos { return m.fields.KeyPos(field) }

// Errorf returns an error positioned at a field of the model, for problems
// found after parsing (a source that cannot be resolved, say).
func (m *Model) Errorf(field, format string, args ...any) *Error {
	e := m.fields.Errorf(field, format, args...)
	e.Model = m.Metadata.Name
	return e
}

func parent(field string) string {
	if i := strings.LastIndexAny(field, ".["); i >= 0 {
		return field[:i]
	}
	return ""
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError positions a YAML syntax error. yaml.v3 reports a line at best
// (and sometimes none), so the file is parsed again with goccy/go-yaml,
// which knows the exact line and column; yaml.v3 stays the decoder because
// it splits multi-document files reliably.
func syntaxError(name string, data []byte, err error) *Error {
	e := &Error{File: name, Line: 1, Column: 1, Message: strings.TrimPrefix(err.Error(), "yaml: ")}
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Message = m[2]
	}
	var positioned interface {
		GetToken() *token.Token
		GetMessage() string
	}
	if _, perr := goccy.ParseBytes(data, 0); errors.As(perr, &positioned) {
		if tk := positioned.GetToken(); tk != nil && tk.Position != nil && tk.Position.Line > 0 {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
			e.Message = positioned.GetMessage()
		}
	}
	e.Message = "invalid YAML: " + e.Message
	return e
}

// Decode strictly decodes a single-document YAML file into v (a pointer to
// a struct with yaml tags), the way manifests are decoded: unknown fields,
// duplicate keys and mistyped values are reported, every one positioned.
// The Fields it returns position the problems found after decoding. It
// serves other YAML files Merlin reads, such as the daemon's configuration.
func Decode(name string, data []byte, v any) (Fields, ErrorList) {
	fields := Fields{file: name, pos: map[string]fieldPos{}}
	if len(data) > MaxFileSize {
		return fields, ErrorList{tooLarge(name)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fields, ErrorList{syntaxError(name, data, err)}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return fields, nil
	}
	d := newDecoder(name)
	d.fields = fields.pos
	d.decode(doc.Content[0], reflect.ValueOf(v).Elem(), "", posOf(doc.Content[0]))
	d.errs.Sort()
	return fields, d.errs
}

package manifest

import "fmt"

// Fields records where each field of a decoded YAML document was written,
// by path (spec.rollout.steps, repositories[0].url). It positions errors
// found after decoding: in manifests (Model.Errorf) and in other files
// decoded with Decode, such as the daemon's configuration.
type Fields struct {
	file string
	pos  map[string]fieldPos
}

// Set reports whether a field path was written in the YAML, as opposed
// to defaulted.
func (f Fields) Set(field string) bool {
	_, ok := f.pos[field]
	return ok
}

// Pos returns the position of a field's value in the YAML, or of the
// nearest enclosing field that was written when the field itself was not
// (a missing field is reported at its parent's key).
func (f Fields) Pos(field string) Pos {
	if p, ok := f.pos[field]; ok {
		return p.Value
	}
	for name := field; name != ""; {
		name = parent(name)
		if p, ok := f.pos[name]; ok {
			if name == "" {
				return p.Value
			}
			return p.Key
		}
	}
	return Pos{Line: 1, Column: 1}
}

// KeyPos returns the position of a field's key, falling back like Pos.
func (f Fields) KeyPos(field string) Pos {
	if p, ok := f.pos[field]; ok && p.Key.Line > 0 {
		return p.Key
	}
	return f.Pos(field)
}

// Errorf returns an error positioned at a field.
func (f Fields) Errorf(field, format string, args ...any) *Error {
	p := f.Pos(field)
	return &Error{File: f.file, Line: p.Line, Column: p.Column, Field: field, Message: fmt.Sprintf(format, args...)}
}

package manifest

import (
	"fmt"
	"reflect"
	"strings"
	"sync"

	yaml "go.yaml.in/yaml/v3"
)

// maxNodes bounds the nodes decoded per document, so that nested aliases
// (a "billion laughs" document) cannot make the decoder run away.
const maxNodes = 10000

// fieldPos records where a field was set: its key and its value.
type fieldPos struct {
	Key, Value Pos
}

// decoder walks a yaml.Node tree into Go values strictly: unknown fields,
// duplicate keys and mistyped scalars are errors, and every error is
// positioned. It keeps going after an error so that one run reports all of
// them.
type decoder struct {
	file   string
	errs   ErrorList
	fields map[string]fieldPos
	nodes  int
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, fields: map[string]fieldPos{}}
}

func posOf(n *yaml.Node) Pos { return Pos{Line: n.Line, Column: n.Column} }

func (d *decoder) errorf(p Pos, field, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: p.Line, Column: p.Column, Field: field, Message: fmt.Sprintf(format, args...)})
}

// decode reads n into v, which must be addressable. key is the position of
// the mapping key that introduced n (the value's own position for
// sequence items and the document root).
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, key Pos) {
	if d.nodes++; d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.errorf(posOf(n), path, "document too large or too deeply aliased (more than %d nodes)", maxNodes)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		d.decode(n.Alias, v, path, key)
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value leaves the field unset
	}
	d.fields[path] = fieldPos{Key: key, Value: posOf(n)}

	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	if sd, ok := v.Addr().Interface().(scalarDecoder); ok {
		if n.Kind != yaml.ScalarNode {
			d.errorf(posOf(n), path, "expected a single value, got %s", kindName(n))
			return
		}
		if err := sd.decodeScalar(n); err != nil {
			d.errorf(posOf(n), path, "%s", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(posOf(n), path, "expected a mapping, got %s", kindName(n))
		return
	}
	fields := structFields(v.Type())
	d.eachPair(n, path, func(k, val *yaml.Node) {
		i, ok := fields.index[k.Value]
		if !ok {
			hint := ""
			if s := suggest(k.Value, fields.names); s != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", s)
			}
			where := path
			if where == "" {
				where = "the document"
			}
			d.errorf(posOf(k), join(path, k.Value), "unknown field %q in %s%s", k.Value, where, hint)
			return
		}
		d.decode(val, v.Field(i), join(path, k.Value), posOf(k))
	})
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(posOf(n), path, "expected a mapping, got %s", kindName(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	d.eachPair(n, path, func(k, val *yaml.Node) {
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, join(path, k.Value), posOf(k))
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	})
}

// eachPair calls fn for every key/value pair of a mapping whose key is a
// plain string, reporting duplicate, merge and non-string keys.
func (d *decoder) eachPair(n *yaml.Node, path string, fn func(k, v *yaml.Node)) {
	seen := map[string]Pos{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
			d.errorf(posOf(k), path, "mapping keys must be plain strings, got %s", kindName(k))
			continue
		case k.Tag == "!!merge":
			d.errorf(posOf(k), path, "YAML merge keys (<<) are not supported; write the fields out")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(posOf(k), join(path, k.Value), "duplicate key %q (first set at line %d)", k.Value, first.Line)
			continue
		}
		seen[k.Value] = posOf(k)
		fn(k, val)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(posOf(n), path, "expected a list, got %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), posOf(item))
	}
	v.Set(s)
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	want := map[reflect.Kind]string{
		reflect.String: "!!str", reflect.Int: "!!int", reflect.Int64: "!!int", reflect.Bool: "!!bool", reflect.Float64: "!!float",
	}[v.Kind()]
	if n.Kind != yaml.ScalarNode {
		d.errorf(posOf(n), path, "expected %s, got %s", tagName(want), kindName(n))
		return
	}
	ok := n.Tag == want || (want == "!!float" && n.Tag == "!!int")
	if !ok {
		hint := ""
		if want == "!!str" && n.Style == 0 {
			hint = fmt.Sprintf(" (quote it: %q)", n.Value)
		}
		d.errorf(posOf(n), path, "expected %s, got %s %s%s", tagName(want), tagName(n.Tag), n.Value, hint)
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.errorf(posOf(n), path, "invalid %s %q", tagName(want), n.Value)
	}
}

// typeFields indexes a struct type's fields by their yaml name.
type typeFields struct {
	index map[string]int
	names []string
}

var fieldCache sync.Map // reflect.Type → *typeFields

func structFields(t reflect.Type) *typeFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*typeFields)
	}
	f := &typeFields{index: map[string]int{}}
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if !sf.IsExported() || name == "-" || name == "" {
			continue
		}
		f.index[name] = i
		f.names = append(f.names, name)
	}
	fieldCache.Store(t, f)
	return f
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		return tagName(n.Tag) + " " + n.Value
	}
	return "nothing"
}

func tagName(tag string) string {
	switch tag {
	case "!!str":
		return "a string"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!null":
		return "null"
	case "!!timestamp":
		return "a timestamp"
	case "!!binary":
		return "binary data"
	}
	return "a value tagged " + tag
}

// suggest returns the candidate closest to s when it is close enough to be
// a likely typo: equal ignoring case, '-' and '_', or within edit distance 2.
func suggest(s string, candidates []string) string {
	norm := func(x string) string {
		return strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(x))
	}
	best, bestDist := "", 3
	for _, c := range candidates {
		if norm(c) == norm(s) {
			return c
		}
		if dist := levenshtein(strings.ToLower(s), strings.ToLower(c)); dist < bestDist {
			best, bestDist = c, dist
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

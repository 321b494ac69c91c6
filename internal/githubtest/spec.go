package githubtest

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
)

// SpecFile is the trimmed OpenAPI description, relative to the module root.
const SpecFile = "testdata/github-openapi/api.github.com.trimmed.json"

var (
	specOnce sync.Once
	specDoc  *openapi3.T
	specErr  error
)

// loadSpec parses the description once per test binary.
func loadSpec() (*openapi3.T, error) {
	specOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		path := filepath.Join(filepath.Dir(file), "..", "..", SpecFile)
		doc, err := openapi3.NewLoader().LoadFromFile(path)
		if err != nil {
			specErr = fmt.Errorf("load %s: %w", path, err)
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			specErr = fmt.Errorf("%s does not validate: %w", path, err)
			return
		}
		specDoc = doc
	})
	return specDoc, specErr
}

// route finds the description's operation for a request path (without the
// /api/v3 prefix); a {path} parameter takes the rest of the path.
func route(doc *openapi3.T, method, path string) (*routers.Route, map[string]string, bool) {
	ps := strings.Split(strings.Trim(path, "/"), "/")
	for tmpl, item := range doc.Paths.Map() {
		params, ok := match(tmpl, ps)
		if !ok {
			continue
		}
		op := item.GetOperation(method)
		if op == nil {
			continue
		}
		return &routers.Route{Spec: doc, Path: tmpl, PathItem: item, Method: method, Operation: op}, params, true
	}
	return nil, nil, false
}

func match(tmpl string, ps []string) (map[string]string, bool) {
	ts := strings.Split(strings.Trim(tmpl, "/"), "/")
	params := map[string]string{}
	for i, t := range ts {
		if i >= len(ps) || ps[i] == "" {
			return nil, false
		}
		name, isParam := strings.CutPrefix(t, "{")
		name = strings.TrimSuffix(name, "}")
		switch {
		case isParam && name == "path":
			params[name] = strings.Join(ps[i:], "/")
			return params, true
		case isParam:
			params[name] = ps[i]
		case t != ps[i]:
			return nil, false
		}
	}
	return params, len(ps) == len(ts)
}

// Command ghopenapi trims GitHub's official OpenAPI description (npm
// @octokit/openapi, generated/api.github.com.json, 13 MB) to the operations
// Merlin's GitHub client uses and the components they reference,
// transitively. The fake GitHub in internal/githubtest validates every
// request and response against the result, so a request the real API would
// refuse fails the test without the whole file in the repository.
//
//	npm pack @octokit/openapi@VERSION   # into ~/.cache/merlin/npm, then untar
//	go run ./hack/ghopenapi -in .../package/generated/api.github.com.json \
//	    -out testdata/github-openapi/api.github.com.trimmed.json
//
// Examples, summaries and documentation links are dropped: they validate
// nothing. Descriptions stay (OpenAPI requires them on responses).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

// operations are the (path, method) pairs Merlin calls. Keep in step with
// scm/github and internal/githubtest.
var operations = map[string][]string{
	"/app/installations/{installation_id}/access_tokens":        {"post"},
	"/repos/{owner}/{repo}/issues/{issue_number}/comments":      {"get", "post"},
	"/repos/{owner}/{repo}/issues/comments/{comment_id}":        {"patch"},
	"/repos/{owner}/{repo}/statuses/{sha}":                      {"post"},
	"/repos/{owner}/{repo}/collaborators/{username}/permission": {"get"},
	"/repos/{owner}/{repo}/contents/{path}":                     {"get"},
	"/repos/{owner}/{repo}/pulls":                               {"get"},
	"/repos/{owner}/{repo}/pulls/{pull_number}":                 {"get"},
	"/orgs/{org}/teams/{team_slug}/memberships/{username}":      {"get"},
}

func main() {
	in := flag.String("in", "", "api.github.com.json from the @octokit/openapi npm package")
	out := flag.String("out", "testdata/github-openapi/api.github.com.trimmed.json", "trimmed description to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "ghopenapi:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	raw, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("parse %s: %w", in, err)
	}
	trimmed, err := trim(doc)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(trimmed, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, append(b, '\n'), 0o644)
}

// trim keeps the listed operations and, transitively, every component a
// kept part refers to.
func trim(doc map[string]any) (map[string]any, error) {
	allPaths, _ := doc["paths"].(map[string]any)
	comps, _ := doc["components"].(map[string]any)
	paths := map[string]any{}
	for p, methods := range operations {
		item, ok := allPaths[p].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("path %s not in the description", p)
		}
		kept := map[string]any{}
		for _, m := range methods {
			op, ok := item[m]
			if !ok {
				return nil, fmt.Errorf("%s %s not in the description", m, p)
			}
			kept[m] = clean(op, "")
		}
		if params, ok := item["parameters"]; ok {
			kept["parameters"] = clean(params, "")
		}
		paths[p] = kept
	}
	// Follow $refs until no new component turns up.
	keptComps := map[string]map[string]any{}
	queue := refs(paths)
	for len(queue) > 0 {
		ref := queue[0]
		queue = queue[1:]
		kind, name, ok := splitRef(ref)
		if !ok {
			return nil, fmt.Errorf("unsupported $ref %q", ref)
		}
		if keptComps[kind] == nil {
			keptComps[kind] = map[string]any{}
		}
		if _, done := keptComps[kind][name]; done {
			continue
		}
		group, _ := comps[kind].(map[string]any)
		v, ok := group[name]
		if !ok {
			return nil, fmt.Errorf("%s not in the description", ref)
		}
		c := clean(v, "")
		keptComps[kind][name] = c
		queue = append(queue, refs(c)...)
	}
	compsOut := map[string]any{}
	for k, v := range keptComps {
		compsOut[k] = v
	}
	info, _ := doc["info"].(map[string]any)
	return map[string]any{
		"openapi": doc["openapi"],
		"info": map[string]any{
			"title":   info["title"],
			"version": info["version"],
			"license": info["license"],
			"description": "Trimmed by hack/ghopenapi from @octokit/openapi " + fmt.Sprint(info["version"]) +
				" (generated/api.github.com.json): only the operations Merlin uses and the components they reference.",
		},
		"servers":    doc["servers"],
		"paths":      paths,
		"components": compsOut,
	}, nil
}

// clean drops examples and summaries; parent is the key v sits under, so that a
// schema property that happens to be called "description" is kept.
func clean(v any, parent string) any {
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range t {
			if parent != "properties" {
				if _, isString := e.(string); isString && k == "summary" {
					continue
				}
				if k == "examples" || k == "example" || k == "externalDocs" || k == "x-github" || k == "x-octokit" || k == "tags" {
					continue
				}
			}
			out[k] = clean(e, k)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = clean(e, "")
		}
		return out
	default:
		return v
	}
}

// refs lists the $ref targets under v, sorted for a stable walk.
func refs(v any) []string {
	seen := map[string]bool{}
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if r, ok := t["$ref"].(string); ok {
				seen[r] = true
			}
			for _, e := range t {
				walk(e)
			}
		case []any:
			for _, e := range t {
				walk(e)
			}
		}
	}
	walk(v)
	out := make([]string, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// splitRef parses "#/components/KIND/NAME".
func splitRef(ref string) (kind, name string, ok bool) {
	rest, ok := strings.CutPrefix(ref, "#/components/")
	if !ok {
		return "", "", false
	}
	kind, name, ok = strings.Cut(rest, "/")
	return kind, name, ok && !strings.Contains(name, "/")
}

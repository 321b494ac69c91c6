package local

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// The router's side of KServe's V1 protocol and the Open Inference
// Protocol (V2): the server-level endpoints it answers itself, the
// versioned paths it routes to one version, and the answers it gives when
// no version can.
//
// X-Merlin-Version is set on every response that a version of a model was
// chosen for (its answer, and the router's 502 or 503 about it). Responses
// the router gives without choosing a version carry none: server-level
// endpoints, an unknown model or version, a model with no version taking
// traffic.

// ServerName is what GET /v2 (OIP server metadata) calls the router.
const ServerName = "merlin"

// serveServer answers the endpoints that concern the server, not one
// model: OIP liveness, readiness and metadata, and KServe V1's model list.
func (l *Local) serveServer(w http.ResponseWriter, r *http.Request) {
	var body any
	code := http.StatusOK
	switch r.URL.Path {
	case "/v2/health/live":
		body = map[string]bool{"live": true}
	case "/v2/health/ready":
		body = map[string]bool{"ready": true}
		if unready := l.routes.Load().unready(); len(unready) > 0 {
			// OIP: 200 says ready, a 4xx says not ready.
			code = http.StatusBadRequest
			body = map[string]any{"ready": false, "error": "no version can serve " + strings.Join(unready, ", ")}
		}
	case "/v2", "/v2/":
		body = map[string]any{"name": ServerName, "version": l.opts.Version, "extensions": []string{}}
	case "/v1/models":
		body = map[string][]string{"models": append([]string{}, slices.Sorted(maps.Keys(l.routes.Load().models))...)}
	default:
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s; use /v1/models/NAME:predict or /v2/models/NAME/infer", r.URL.Path))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSONError(w, http.StatusMethodNotAllowed, fmt.Sprintf("use GET for %s", r.URL.Path))
		return
	}
	writeJSONBody(w, code, body)
}

// unready lists the models that no version can serve now: none takes
// traffic, or those that do are starting, failed or stopping. A version
// scaled to zero can serve: it starts on the next request.
func (t *routeTable) unready() []string {
	var out []string
	for model, mr := range t.models {
		if !slices.ContainsFunc(mr.choices, func(c choice) bool { return c.p.servable() }) {
			out = append(out, model)
		}
	}
	slices.Sort(out)
	return out
}

// versions lists the versions of a model that take traffic: those that a
// client may ask for by /v2/models/NAME/versions/VERSION/..., and that
// model metadata lists, in the order of the model's deployment.
func (m *modelRoutes) versions() []string {
	out := make([]string, 0, len(m.choices))
	for _, c := range m.choices {
		out = append(out, c.p.v.ID)
	}
	return out
}

// choose returns the version a request names, or draws one by weight
// when it names none.
func (m *modelRoutes) choose(version string) *process {
	if version == "" {
		return m.pick()
	}
	return m.version(version)
}

// version returns the process of the version id when it takes traffic,
// or nil.
func (m *modelRoutes) version(id string) *process {
	for _, c := range m.choices {
		if c.p.v.ID == id {
			return c.p
		}
	}
	return nil
}

// v2Path splits an OIP model path /v2/models/NAME[/versions/VERSION][/REST]
// into the version asked for ("" for none) and what follows it ("" for
// model metadata, "ready", "infer").
func v2Path(path string) (version, rest string, ok bool) {
	tail, ok := strings.CutPrefix(path, "/v2/models/")
	if !ok {
		return "", "", false
	}
	_, tail, _ = strings.Cut(tail, "/")
	if v, ok := strings.CutPrefix(tail, "versions/"); ok {
		version, rest, _ = strings.Cut(v, "/")
		return version, rest, true
	}
	return "", tail, true
}

// versionOf is the version a request names in its path, or "".
func versionOf(path string) string {
	v, _, _ := v2Path(path)
	return v
}

// isModelReady reports whether a request is OIP's model-ready probe.
func isModelReady(r *http.Request) bool {
	_, rest, ok := v2Path(r.URL.Path)
	return ok && rest == "ready" && r.Method == http.MethodGet
}

// noVersion answers a request for which no version was chosen: the model
// is unknown, the version asked for takes no traffic, or the model has no
// version taking traffic.
func noVersion(w http.ResponseWriter, r *http.Request, model, version string, mr *modelRoutes) {
	switch {
	case mr == nil:
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("model %q not found", model))
	case version != "":
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("model %q has no version %q taking traffic (versions: %s)",
			model, version, strings.Join(mr.versions(), ", ")))
	case isModelReady(r):
		notReady(w, model, fmt.Sprintf("model %q has no version serving", model))
	default:
		writeJSONError(w, http.StatusServiceUnavailable, fmt.Sprintf("model %q has no version serving", model))
	}
}

// notReady answers OIP's model-ready probe with false: a 4xx, as the
// protocol says, without waiting for a version that is starting.
func notReady(w http.ResponseWriter, model, msg string) {
	writeJSONBody(w, http.StatusBadRequest, map[string]any{"name": model, "ready": false, "error": msg})
}

// isModelMetadata reports whether a request is OIP's model metadata.
func isModelMetadata(r *http.Request) bool {
	_, rest, ok := v2Path(r.URL.Path)
	return ok && rest == "" && r.Method == http.MethodGet
}

// withVersions makes a model-metadata answer list the versions that take
// traffic, whichever of them answered: each model server knows only its own.
func withVersions(resp *response, versions []string) {
	if resp.code != http.StatusOK {
		return
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(resp.body, &m) != nil || m == nil {
		return
	}
	m["versions"], _ = json.Marshal(versions)
	if body, err := json.Marshal(m); err == nil {
		resp.body = append(body, '\n')
	}
}

func writeJSONBody(w http.ResponseWriter, code int, v any) {
	body, _ := json.Marshal(v)
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

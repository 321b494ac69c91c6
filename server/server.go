// Package server is Merlin's HTTP API: model and rollout status
// (/api/v1/models), rollout commands, repository status, the status page,
// /metrics and /healthz. It reads the reconcilers and the target; it
// decides nothing.
//
// Reads are open. Calls that act (rollout commands) need the bearer token
// when one is configured, Content-Type application/json, and an Origin,
// if any, of this server; on a loopback listener every request must name
// a loopback or allowed Host. Every answer carries a Content-Security-Policy
// that allows the status page its inline style and nothing else.
// GitHub's webhook deliveries (POST /hooks/github, Options.Hooks) are
// authenticated by their signature instead of the token and JSON checks.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"merlin.dev/merlin/gitsource"
	"merlin.dev/merlin/reconciler"
	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
)

// Repo is a reconciled repository.
type Repo interface {
	Repo() string
	Status() reconciler.Status
	Command(ctx context.Context, model string, cmd rollout.Command) (reconciler.CommandResult, error)
}

// Options wire the server to the daemon's parts.
type Options struct {
	Repos []Repo
	// Sources reports the git pollers' health, by repository name.
	Sources  func() map[string]gitsource.Status
	Gatherer prometheus.Gatherer
	Version  string
	// Token, when set, is the bearer token that calls which act (rollout
	// commands) must carry. Reads stay open.
	Token string
	// AllowedHosts, when set, limits the Host a request may name to
	// loopback names and addresses and these (ports are ignored): a page
	// that rebinds its own DNS name to 127.0.0.1 is refused. Set it for
	// a loopback listener.
	AllowedHosts []string
	// Hooks, when set, serves POST /hooks/github (GitHub's webhook
	// deliveries, see package webhooks). It authenticates deliveries by
	// their signature, so the checks of calls that act (bearer token,
	// JSON, Origin) do not apply to it; the Host check and the security
	// headers do.
	Hooks http.Handler
	// Gate, when set, wraps the routes behind the security checks (the
	// daemon's follower refusal), so that it sees only requests that
	// passed them and its answers carry the security headers.
	Gate func(http.Handler) http.Handler
}

// HooksPath is where GitHub delivers webhooks (SPEC §3).
const HooksPath = "/hooks/github"

// Server serves the API.
type Server struct {
	opts    Options
	mux     *http.ServeMux
	handler http.Handler
}

// New returns the API server.
func New(opts Options) *Server {
	s := &Server{opts: opts, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	if opts.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	s.mux.HandleFunc("GET /api/v1/models", s.listModels)
	s.mux.HandleFunc("GET /api/v1/models/{name}", s.getModel)
	s.mux.HandleFunc("POST /api/v1/models/{name}/{action}", s.command)
	s.mux.HandleFunc("GET /api/v1/repos", s.listRepos)
	s.mux.HandleFunc("GET /{$}", s.page)
	if opts.Hooks != nil {
		s.mux.Handle("POST "+HooksPath, opts.Hooks)
	}
	var h http.Handler = s.mux
	if opts.Gate != nil {
		h = opts.Gate(h)
	}
	s.handler = s.secure(h)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Models returns every model of every repository, in the one status
// shape (serving.ModelStatus) the reconcilers publish: their state merged
// with what the target observes, refreshed on every reconcile tick and
// every change the target reports.
func (s *Server) Models() []serving.ModelStatus {
	var out []serving.ModelStatus
	for _, repo := range s.opts.Repos {
		out = append(out, repo.Status().Models...)
	}
	slices.SortFunc(out, func(a, b serving.ModelStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"models": orEmpty(s.Models())})
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	for _, m := range s.Models() {
		if m.Name == name {
			writeJSON(w, http.StatusOK, m)
			return
		}
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"error": "model " + name + " not found"})
}

func (s *Server) command(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), rollout.Command(r.PathValue("action"))
	res, err := s.Command(r.Context(), name, action)
	switch {
	case errors.Is(err, ErrUnknownAction), errors.Is(err, ErrNoModel):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case errors.Is(err, context.DeadlineExceeded):
		writeJSON(w, http.StatusGatewayTimeout, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "result": res})
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// Errors of Command that name no model or action to act on.
var (
	ErrUnknownAction = errors.New("unknown action")
	ErrNoModel       = errors.New("not found")
)

// Command runs a rollout command on the model of whichever repository
// serves it, waiting at most 30s. It is the one code path of the API's
// POST /api/v1/models/{name}/{action} (and so the CLI's) and of the pull
// request comment commands.
func (s *Server) Command(ctx context.Context, name string, action rollout.Command) (reconciler.CommandResult, error) {
	switch action {
	case rollout.Promote, rollout.Rollback, rollout.Pause, rollout.Resume:
	default:
		return reconciler.CommandResult{}, fmt.Errorf("%w %s: use promote, rollback, pause or resume", ErrUnknownAction, action)
	}
	for _, repo := range s.opts.Repos {
		if !slices.ContainsFunc(repo.Status().Models, func(m serving.ModelStatus) bool { return m.Name == name }) {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return repo.Command(ctx, name, action)
	}
	return reconciler.CommandResult{}, fmt.Errorf("model %s %w", name, ErrNoModel)
}

// RepoView is one repository's reconciliation and git health.
type RepoView struct {
	Repo       string            `json:"repo"`
	URL        string            `json:"url,omitempty"`
	SHA        string            `json:"sha,omitempty"`
	Error      string            `json:"error,omitempty"`
	FileErrors map[string]string `json:"fileErrors,omitempty"`
	// StateError is why the repository's state cannot be saved (a full
	// disk), while it cannot.
	StateError string            `json:"stateError,omitempty"`
	Models     []string          `json:"models"`
	Git        *gitsource.Status `json:"git,omitempty"`
}

func (s *Server) listRepos(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"repos": s.repos()})
}

// repos is every repository's view: its reconciliation (a repository
// error stops all its models; file errors hold the models of one file)
// and its git health.
func (s *Server) repos() []RepoView {
	var sources map[string]gitsource.Status
	if s.opts.Sources != nil {
		sources = s.opts.Sources()
	}
	out := []RepoView{}
	for _, repo := range s.opts.Repos {
		st := repo.Status()
		v := RepoView{Repo: st.Repo, URL: st.URL, SHA: st.SHA, Error: st.Error, FileErrors: st.FileErrors, StateError: st.StateError, Models: []string{}}
		for _, m := range st.Models {
			v.Models = append(v.Models, m.Name)
		}
		if g, ok := sources[repo.Repo()]; ok {
			v.Git = &g
		}
		out = append(out, v)
	}
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

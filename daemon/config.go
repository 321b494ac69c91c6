package daemon

import (
	"cmp"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"merlin.dev/merlin/manifest"
)

// Config is the daemon's configuration (merlin run --config FILE).
type Config struct {
	Repositories []Repository `yaml:"repositories"`
	// Target is where models are served: local or kubernetes.
	Target     string     `yaml:"target"`
	Local      Local      `yaml:"local"`
	Kubernetes Kubernetes `yaml:"kubernetes"`
	MLflow     MLflow     `yaml:"mlflow"`
	Metrics    Metrics    `yaml:"metrics"`
	Server     Server     `yaml:"server"`
}

// Repository is a watched Git repository.
type Repository struct {
	Name   string `yaml:"name"`
	URL    string `yaml:"url"`
	Branch string `yaml:"branch"`
	// Paths are where merlin.yaml files are searched; the whole repository
	// when empty.
	Paths    []string          `yaml:"paths"`
	Interval manifest.Duration `yaml:"interval"`
	Auth     Auth              `yaml:"auth"`
	GitHub   GitHub            `yaml:"github"`
}

// Auth names where a repository's credentials are; secrets themselves are
// never in the file.
type Auth struct {
	TokenEnv      string `yaml:"tokenEnv"`
	Username      string `yaml:"username"`
	SSHKeyFile    string `yaml:"sshKeyFile"`
	SSHKnownHosts string `yaml:"sshKnownHosts"`
}

// GitHub connects a repository to GitHub for webhooks and PR reporting.
//
//	github:
//	  repo: acme/models                        # GitHub's owner/name
//	  tokenEnv: GITHUB_TOKEN                   # comment commands reply with it; empty: they are only logged
//	  apiURL: https://api.github.com           # default; GitHub Enterprise: https://HOST/api/v3
//	  webhookSecretEnv: MERLIN_WEBHOOK_SECRET  # required: deliveries must be signed with it
//	  commentInterval: 10s                     # least time between edits of one PR comment
//	  statusURL: https://merlin.example.com/   # the status page, linked from comments and statuses
type GitHub struct {
	Repo string `yaml:"repo"`
	// TokenEnv names the environment variable holding the token the
	// GitHub API is called with; set but empty refuses the start.
	TokenEnv string `yaml:"tokenEnv"`
	// App authenticates as a GitHub App installation instead of a token.
	App *GitHubApp `yaml:"app"`
	// CommentInterval is the least time between two edits of one pull
	// request's comment. Default 10s.
	CommentInterval manifest.Duration `yaml:"commentInterval"`
	// StatusURL is the status page as GitHub's users reach it; default
	// the server's address.
	StatusURL string `yaml:"statusURL"`
	// APIURL is GitHub's REST API; default https://api.github.com.
	APIURL string `yaml:"apiURL"`
	// WebhookSecretEnv names the environment variable holding the webhook
	// secret; the daemon refuses to start when it is empty.
	WebhookSecretEnv string `yaml:"webhookSecretEnv"`
}

// GitHubApp is a GitHub App installation the API is called as.
type GitHubApp struct {
	ID             int64  `yaml:"id"`
	InstallationID int64  `yaml:"installationID"`
	PrivateKeyFile string `yaml:"privateKeyFile"`
}

// Configured reports whether the github block is set.
func (g GitHub) Configured() bool {
	return g.Repo != "" || g.TokenEnv != "" || g.App != nil || g.APIURL != "" || g.WebhookSecretEnv != "" || g.StatusURL != "" || g.CommentInterval != 0
}

// Reports reports whether the pull-request loop may call GitHub's API
// (a token or an app is set).
func (g GitHub) Reports() bool { return g.TokenEnv != "" || g.App != nil }

var githubRepo = regexp.MustCompile(`^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$`)

// validate checks a repository's github block (at is its field path).
// appProblem says what is wrong with the app block, and where, or "".
func (g GitHub) appProblem() (field, msg string) {
	switch {
	case g.App == nil:
		return "", ""
	case g.TokenEnv != "":
		return "app", "set tokenEnv or app, not both"
	case g.App.ID <= 0 || g.App.InstallationID <= 0:
		return "app", "needs id and installationID (the app's settings and its installation on the repository show them)"
	case g.App.PrivateKeyFile == "":
		return "app.privateKeyFile", "is required: the app's private key (PEM) signs its tokens"
	}
	return "", ""
}

// plainHTTPURL reports whether s is an http(s) URL with a host and no
// credentials.
func plainHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && u.User == nil
}

func (g GitHub) validate(at string) []fieldProblem {
	if !g.Configured() {
		return nil
	}
	var problems []fieldProblem
	add := func(field, format string, args ...any) {
		problems = append(problems, fieldProblem{at + "." + field, fmt.Sprintf(format, args...)})
	}
	if !githubRepo.MatchString(g.Repo) {
		add("repo", "%q must be GitHub's owner/name, such as acme/models", g.Repo)
	}
	for _, f := range []struct{ name, env string }{{"tokenEnv", g.TokenEnv}, {"webhookSecretEnv", g.WebhookSecretEnv}} {
		if f.env != "" && !envName.MatchString(f.env) {
			add(f.name, "%q must be the name of an environment variable, not the secret", f.env)
		}
	}
	if field, msg := g.appProblem(); msg != "" {
		add(field, "%s", msg)
	}
	if g.CommentInterval != 0 && g.CommentInterval.D() < time.Second {
		add("commentInterval", "must be at least 1s")
	}
	if g.StatusURL != "" && !plainHTTPURL(g.StatusURL) {
		add("statusURL", "%q must be an http(s) URL without credentials", g.StatusURL)
	}
	if g.APIURL != "" && !plainHTTPURL(g.APIURL) {
		add("apiURL", "%q must be an http(s) URL without credentials, such as https://api.github.com", g.APIURL)
	}
	if g.WebhookSecretEnv == "" {
		add("webhookSecretEnv", "is required with github: name the environment variable holding the webhook's secret (deliveries are verified with it)")
	}
	return problems
}

// Local configures the local target.
//
//	local:
//	  listen: 127.0.0.1:8080     # the model endpoint (router)
//	  stateDir: .merlin
//	  maxRequestBytes: 8Mi       # larger request bodies get 413, before they are read
//	                             # when the client states a Content-Length
//	  maxBufferedBytes: 64Mi     # request bytes the router holds in memory at once, all models;
//	                             # at least maxRequestBytes; beyond it requests queue, then 503
//	  maxConcurrency: 64         # requests of one model in flight; beyond it they queue, then 429
//	  maxQueue: 64               # requests that may wait for a model (and for bytes); -1: none
//	  queueTimeout: 1s           # how long one waits
//
// Bodies over 1 MiB with a stated length are streamed to the model server
// (a 32 KiB buffer each, not their size, and they are not mirrored);
// shorter ones and chunked ones are read first (a chunked one takes its
// share of maxBufferedBytes as it grows). 413, 429 and 503 refusals
// are answered before a version is picked and count on no version's
// stats: a client's excess never fails a canary.
type Local struct {
	// Listen is the model endpoint (router) address.
	Listen string `yaml:"listen"`
	// StateDir holds bundles, git caches, model-server logs and state.
	StateDir string `yaml:"stateDir"`
	// Workers per model server.
	Workers int `yaml:"workers"`
	// IdleTimeout stops versions with replicas.min 0 after this long idle.
	IdleTimeout manifest.Duration `yaml:"idleTimeout"`
	// Python is the interpreter for model servers.
	Python string `yaml:"python"`
	// RunAsUser is the user model servers run as when the daemon runs as
	// root (default nobody; "root" keeps root). A daemon that is not root
	// runs them as itself.
	RunAsUser string `yaml:"runAsUser"`
	// MaxRequestBytes is the largest request body the router accepts, a
	// quantity such as 8Mi or 100M; default 8Mi.
	MaxRequestBytes manifest.Quantity `yaml:"maxRequestBytes"`
	// MaxBufferedBytes bounds the request bytes held in memory; default 64Mi.
	MaxBufferedBytes manifest.Quantity `yaml:"maxBufferedBytes"`
	// MaxConcurrency bounds each model's requests in flight; default 64.
	MaxConcurrency int `yaml:"maxConcurrency"`
	// MaxQueue bounds the requests waiting for room; default 64, -1 none.
	MaxQueue int `yaml:"maxQueue"`
	// QueueTimeout bounds the wait of one; default 1s.
	QueueTimeout manifest.Duration `yaml:"queueTimeout"`
}

// Kubernetes configures the kubernetes target (SPEC §3, §6). The daemon
// reaches the cluster with its in-cluster service account, or KUBECONFIG
// outside a cluster.
//
//	kubernetes:
//	  namespace: models                       # required with target kubernetes: where InferenceServices,
//	                                          # VirtualServices and rollout state go (a DNS-1123 label)
//	  registry: registry.example.com/models   # where built model images are pushed; no scheme
//	  gateway: istio-system/ingressgateway    # Istio Gateway the VirtualServices bind to, [namespace/]name
//	                                          # (no namespace: kubernetes.namespace); empty: inside the mesh only
//	  host: models.example.com                # host the VirtualServices answer for; required with a gateway
//	  leaderElection:                         # only the holder of a coordination.k8s.io Lease reconciles
//	    enabled: true                         # default: true with target kubernetes
//	    namespace: merlin-system              # default: the pod's namespace (POD_NAMESPACE, else the
//	                                          # service account's), else kubernetes.namespace
//	    leaseName: merlin-leader              # default merlin-leader
//	    leaseDuration: 15s                    # a crashed leader is replaced after this; default 15s
//	    renewDeadline: 10s                    # the leader steps down when it cannot renew for this long; default 10s
//	    retryPeriod: 2s                       # how often candidates and the leader try; default 2s
//
// The durations must satisfy leaseDuration > renewDeadline > 1.2 × retryPeriod
// (client-go's rule, so that a leader steps down before others take over).
type Kubernetes struct {
	Namespace      string         `yaml:"namespace"`
	Registry       string         `yaml:"registry"`
	Gateway        string         `yaml:"gateway"`
	Host           string         `yaml:"host"`
	LeaderElection LeaderElection `yaml:"leaderElection"`
}

// LeaderElection configures the Lease that makes one replica the leader.
// Followers serve /healthz, /metrics and the read-only API; they neither
// reconcile nor apply, and refuse rollout commands with 503 naming the
// leader.
type LeaderElection struct {
	// Enabled defaults to true with target kubernetes and false otherwise.
	Enabled       *bool             `yaml:"enabled"`
	Namespace     string            `yaml:"namespace"`
	LeaseName     string            `yaml:"leaseName"`
	LeaseDuration manifest.Duration `yaml:"leaseDuration"`
	RenewDeadline manifest.Duration `yaml:"renewDeadline"`
	RetryPeriod   manifest.Duration `yaml:"retryPeriod"`
}

// On reports whether leader election is enabled (after defaults).
func (l LeaderElection) On() bool { return l.Enabled != nil && *l.Enabled }

// MLflow configures MLflow access for models with source.mlflow.
//
//	mlflow:
//	  trackingURI: http://mlflow:5000      # or a local mlruns directory; else MLFLOW_TRACKING_URI
//	  tokenEnv: MLFLOW_TRACKING_TOKEN      # bearer token; or usernameEnv/passwordEnv for basic auth
//	  maxDownloads: 2                      # artifact downloads at once
type MLflow struct {
	TrackingURI string `yaml:"trackingURI"`
	// TokenEnv names the variable holding a bearer token; default
	// MLFLOW_TRACKING_TOKEN.
	TokenEnv string `yaml:"tokenEnv"`
	// UsernameEnv and PasswordEnv name the variables holding basic auth;
	// default MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.
	UsernameEnv string `yaml:"usernameEnv"`
	PasswordEnv string `yaml:"passwordEnv"`
	// MaxDownloads bounds the artifact downloads at once. Default 2.
	MaxDownloads int `yaml:"maxDownloads"`
}

// validate checks the mlflow block.
func (m MLflow) validate() []fieldProblem {
	var problems []fieldProblem
	for _, f := range []struct{ name, env string }{{"tokenEnv", m.TokenEnv}, {"usernameEnv", m.UsernameEnv}, {"passwordEnv", m.PasswordEnv}} {
		if f.env != "" && !envName.MatchString(f.env) {
			problems = append(problems, fieldProblem{"mlflow." + f.name, fmt.Sprintf("%q must be the name of an environment variable, not the secret", f.env)})
		}
	}
	if m.MaxDownloads < 0 {
		problems = append(problems, fieldProblem{"mlflow.maxDownloads", "must be positive"})
	}
	return problems
}

// Metrics selects the metrics provider for rollout analysis.
type Metrics struct {
	Provider string `yaml:"provider"`
	URL      string `yaml:"url"`
	// Series is what the prometheus provider reads: "router" (Merlin's own
	// merlin_* series scraped from its /metrics) or "istio" (the predictor
	// pods' istio_requests_total and istio_request_duration_milliseconds).
	// Default: router with target local, istio with target kubernetes.
	Series string       `yaml:"series"`
	Istio  IstioMetrics `yaml:"istio"`
}

// IstioMetrics say how Istio's series identify a version (series: istio);
// see metrics/prom.IstioOptions. Namespace defaults to kubernetes.namespace.
type IstioMetrics struct {
	Namespace      string `yaml:"namespace"`
	VersionLabel   string `yaml:"versionLabel"`
	VersionPattern string `yaml:"versionPattern"`
	Reporter       string `yaml:"reporter"`
}

// Server configures the API, status page, webhooks and /metrics.
//
//	server:
//	  listen: 127.0.0.1:9292          # default; an address beyond loopback needs tokenEnv
//	  tokenEnv: MERLIN_API_TOKEN      # rollout commands need Authorization: Bearer $MERLIN_API_TOKEN
//	  allowedHosts: [merlin.internal] # more Host names a loopback listener answers (behind a proxy)
//
// Reads (status page, GET /api/v1/..., /metrics, /healthz) stay open.
type Server struct {
	Listen string `yaml:"listen"`
	// TokenEnv names the environment variable holding the bearer token
	// that rollout commands must carry; set but empty is an error.
	TokenEnv string `yaml:"tokenEnv"`
	// AllowedHosts are Host names (no port) besides loopback ones and the
	// listen host that requests may name. Checking the Host defends a
	// loopback listener from DNS rebinding; with allowedHosts set, a
	// listener beyond loopback is checked too.
	AllowedHosts []string `yaml:"allowedHosts"`
}

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

var repoName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$`)

// ParseConfig decodes a configuration, applies defaults and checks it.
// Every problem is reported with its position.
func ParseConfig(name string, data []byte) (*Config, error) {
	var c Config
	fields, errs := manifest.Decode(name, data, &c)
	if len(errs) > 0 {
		return nil, errs
	}
	c.defaults()
	problems := position(fields, append(c.validate(), c.Kubernetes.validate(c.Target)...))
	if len(problems) > 0 {
		return nil, fmt.Errorf("invalid config:\n  %s", strings.Join(problems, "\n  "))
	}
	return &c, nil
}

func (c *Config) defaults() {
	c.Target = cmp.Or(c.Target, "local")
	c.Local.Listen = cmp.Or(c.Local.Listen, "127.0.0.1:8080")
	c.Local.StateDir = cmp.Or(c.Local.StateDir, ".merlin")
	c.Server.Listen = cmp.Or(c.Server.Listen, "127.0.0.1:9292")
	c.Metrics.Provider = cmp.Or(c.Metrics.Provider, "local")
	c.Kubernetes.defaults(c.Target)
	for i := range c.Repositories {
		r := &c.Repositories[i]
		r.Branch = cmp.Or(r.Branch, "main")
		r.Interval = cmp.Or(r.Interval, manifest.Duration(time.Minute))
	}
}

// checkSearchPath says what is wrong with a repositories[].paths entry, or
// "". "models", "models/" and "./models" are the same directory.
func checkSearchPath(p string) string {
	switch c := path.Clean(strings.TrimSpace(p)); {
	case strings.TrimSpace(p) == "":
		return "is empty; omit paths to search the whole repository"
	case path.IsAbs(c):
		return "must be relative to the repository root, not absolute"
	case c == ".." || strings.HasPrefix(c, "../"):
		return "leaves the repository"
	case strings.Contains(p, `\`):
		return "must use / as the separator"
	}
	return ""
}

// validate checks everything but the kubernetes block.
func (c *Config) validate() []fieldProblem {
	var problems []fieldProblem
	add := func(field, format string, args ...any) {
		problems = append(problems, fieldProblem{field, fmt.Sprintf(format, args...)})
	}
	for i, r := range c.Repositories {
		at := fmt.Sprintf("repositories[%d]", i)
		switch {
		case r.Name == "" || !repoName.MatchString(r.Name):
			add(at+".name", "%q must be lower-case letters, digits, '-', '_' or '.'", r.Name)
		case r.URL == "":
			add(at+".url", "is required")
		case r.Interval.D() < time.Second:
			add(at+".interval", "must be at least 1s")
		}
		problems = append(problems, r.GitHub.validate(at+".github")...)
		for j, p := range r.Paths {
			if msg := checkSearchPath(p); msg != "" {
				add(fmt.Sprintf("%s.paths[%d]", at, j), "%q %s", p, msg)
			}
		}
		for j := range i {
			if c.Repositories[j].Name == r.Name {
				add(at+".name", "%q is used twice", r.Name)
			}
		}
	}
	if len(c.Repositories) == 0 {
		add("repositories", "at least one repository is required")
	}
	if c.Target != "local" && c.Target != "kubernetes" {
		add("target", "%q must be local or kubernetes", c.Target)
	}
	if c.Metrics.Provider != "local" && c.Metrics.Provider != "prometheus" {
		add("metrics.provider", "%q must be local or prometheus", c.Metrics.Provider)
	}
	if c.Metrics.Provider == "prometheus" && c.Metrics.URL == "" {
		add("metrics.url", "is required for the prometheus provider")
	}
	problems = append(problems, c.Local.validate()...)
	problems = append(problems, c.MLflow.validate()...)
	return append(problems, c.Server.validate()...)
}

func (l Local) validate() []fieldProblem {
	var problems []fieldProblem
	add := func(field, format string, args ...any) {
		problems = append(problems, fieldProblem{"local." + field, fmt.Sprintf(format, args...)})
	}
	for _, f := range []struct {
		name string
		q    manifest.Quantity
	}{{"maxRequestBytes", l.MaxRequestBytes}, {"maxBufferedBytes", l.MaxBufferedBytes}} {
		if f.q != "" && f.q.Value() <= 0 {
			add(f.name, "%q must be a positive number of bytes such as 8Mi", f.q)
		}
	}
	if l.MaxConcurrency < 0 {
		add("maxConcurrency", "must be positive (0: the default, 64)")
	}
	if l.MaxQueue < -1 {
		add("maxQueue", "must be -1 (no queue), 0 (the default, 64) or more")
	}
	if l.QueueTimeout < 0 {
		add("queueTimeout", "must not be negative")
	}
	return problems
}

func (s Server) validate() []fieldProblem {
	var problems []fieldProblem
	add := func(field, format string, args ...any) {
		problems = append(problems, fieldProblem{"server." + field, fmt.Sprintf(format, args...)})
	}
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		add("listen", "%q must be host:port", s.Listen)
	}
	if s.TokenEnv != "" && !envName.MatchString(s.TokenEnv) {
		add("tokenEnv", "%q must be the name of an environment variable, not the token", s.TokenEnv)
	}
	for i, h := range s.AllowedHosts {
		if h == "" || net.ParseIP(h) == nil && strings.ContainsAny(h, "/:@ []") {
			add(fmt.Sprintf("allowedHosts[%d]", i), "%q must be a host name or address, without scheme or port", h)
		}
	}
	return problems
}

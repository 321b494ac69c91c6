// Package daemon wires Merlin's parts into the running daemon: one git
// poller and one reconciler per repository, the target, the metrics
// provider, and the HTTP servers (model endpoint and API). `merlin run`
// and `merlin up` are thin layers over it.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/gitsource"
	"merlin.dev/merlin/metrics"
	"merlin.dev/merlin/metrics/prom"
	"merlin.dev/merlin/reconciler"
	"merlin.dev/merlin/server"
	"merlin.dev/merlin/target/local"
)

// Options tune a daemon beyond its configuration.
type Options struct {
	// CombinedListen serves models and the API on one address (merlin up)
	// instead of local.listen and server.listen.
	CombinedListen string
	// Tick and StopTimeout override defaults (tests).
	Tick        time.Duration
	StopTimeout time.Duration
	Version     string
	Logger      *slog.Logger
}

// Daemon is a running Merlin.
type Daemon struct {
	cfg      *Config
	opts     Options
	log      *slog.Logger
	local    *local.Local
	repos    []*repo
	api      *server.Server
	servers  []*http.Server
	lns      []net.Listener
	registry *prometheus.Registry
}

type repo struct {
	src    *gitsource.Source
	poller *gitsource.Poller
	rec    *reconciler.Reconciler
}

// New builds a daemon and opens its listeners, so that an address in use
// fails here rather than after start.
func New(cfg *Config, opts Options) (*Daemon, error) {
	if cfg.Target != "local" {
		return nil, fmt.Errorf("target %q is not available yet; use local", cfg.Target)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	stateDir, err := filepath.Abs(cfg.Local.StateDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	d := &Daemon{cfg: cfg, opts: opts, log: log, registry: prometheus.NewRegistry()}
	stats := metrics.NewRegistry()
	d.local, err = local.New(local.Options{
		StateDir: filepath.Join(stateDir, "local"), Python: cfg.Local.Python, Workers: cfg.Local.Workers,
		IdleTimeout: cfg.Local.IdleTimeout.D(), StopTimeout: opts.StopTimeout, Stats: stats, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			d.local.Close()
			for _, ln := range d.lns {
				ln.Close()
			}
		}
	}()
	b, err := builder.New(filepath.Join(stateDir, "bundles"))
	if err != nil {
		return nil, err
	}
	provider, err := newProvider(cfg, stats)
	if err != nil {
		return nil, err
	}
	claims := reconciler.NewClaims()
	for _, rc := range cfg.Repositories {
		r, err := d.newRepo(rc, stateDir, b, provider, claims)
		if err != nil {
			return nil, err
		}
		d.repos = append(d.repos, r)
	}
	d.registry.MustRegister(stats, reconciler.RolloutEvents, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	repos := make([]server.Repo, len(d.repos))
	for i, r := range d.repos {
		repos[i] = r.rec
	}
	d.api = server.New(server.Options{Target: d.local, Repos: repos, Sources: d.sources, Gatherer: d.registry, Version: opts.Version})
	if err := d.listen(); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

func newProvider(cfg *Config, stats *metrics.Registry) (metrics.Provider, error) {
	c := cfg.Metrics
	if c.Provider == "local" {
		return metrics.NewLocal(stats), nil
	}
	series := c.Series
	if series == "" {
		series = map[string]string{"kubernetes": "istio"}[cfg.Target]
	}
	var schema prom.Schema
	switch series {
	case "", "router":
		schema = prom.Router()
	case "istio":
		ns := c.Istio.Namespace
		if ns == "" {
			ns = cfg.Kubernetes.Namespace
		}
		var err error
		schema, err = prom.Istio(prom.IstioOptions{Namespace: ns, VersionLabel: c.Istio.VersionLabel, VersionPattern: c.Istio.VersionPattern, Reporter: c.Istio.Reporter})
		if err != nil {
			return nil, fmt.Errorf("metrics.istio: %w", err)
		}
	default:
		return nil, fmt.Errorf("metrics.series: %q must be router or istio", c.Series)
	}
	p, err := prom.New(prom.Options{URL: c.URL, Schema: schema})
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return p, nil
}

func (d *Daemon) newRepo(rc Repository, stateDir string, b *builder.Builder, m metrics.Provider, claims *reconciler.Claims) (*repo, error) {
	auth := gitsource.Auth{Username: rc.Auth.Username, SSHKeyFile: rc.Auth.SSHKeyFile, SSHKnownHosts: rc.Auth.SSHKnownHosts}
	if rc.Auth.TokenEnv != "" {
		auth.Token = os.Getenv(rc.Auth.TokenEnv)
		if auth.Token == "" {
			return nil, fmt.Errorf("repository %s: environment variable %s (auth.tokenEnv) is empty", rc.Name, rc.Auth.TokenEnv)
		}
	}
	src, err := gitsource.New(gitsource.Config{
		Name: rc.Name, URL: rc.URL, Branch: rc.Branch, Auth: auth, CacheDir: filepath.Join(stateDir, "git", rc.Name),
	}, d.log)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", rc.Name, err)
	}
	rec, err := reconciler.New(reconciler.Config{
		Repo: rc.Name, URL: src.URL(), Paths: rc.Paths, StateDir: stateDir, Tick: d.opts.Tick,
	}, src, d.local, b, m, claims, d.log)
	if err != nil {
		return nil, err
	}
	// An unreachable remote is retried with a backoff that scales with how
	// often the repository is polled: 30 intervals, within [10s, 5m].
	backoffCap := min(max(30*rc.Interval.D(), 10*time.Second), 5*time.Minute)
	poller := gitsource.NewPoller(src, gitsource.PollerConfig{Interval: rc.Interval.D(), BackoffCap: backoffCap})
	return &repo{src: src, poller: poller, rec: rec}, nil
}

func (d *Daemon) sources() map[string]gitsource.Status {
	out := map[string]gitsource.Status{}
	for _, r := range d.repos {
		out[r.src.Name()] = r.poller.Status()
	}
	return out
}

// listen opens the HTTP listeners: one combined, or models and API apart.
func (d *Daemon) listen() error {
	serve := func(addr string, h http.Handler) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		d.lns = append(d.lns, ln)
		d.servers = append(d.servers, &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute})
		return nil
	}
	if d.opts.CombinedListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/v1/", d.local)
		mux.Handle("/v2/", d.local)
		mux.Handle("/", d.api)
		return serve(d.opts.CombinedListen, mux)
	}
	if err := serve(d.cfg.Local.Listen, d.local); err != nil {
		return err
	}
	return serve(d.cfg.Server.Listen, d.api)
}

// ModelsAddr is where models are served; APIAddr where the API is.
func (d *Daemon) ModelsAddr() string { return d.lns[0].Addr().String() }

// APIAddr is where the API, status page and /metrics are served.
func (d *Daemon) APIAddr() string { return d.lns[len(d.lns)-1].Addr().String() }

// API returns the API server (for status printing).
func (d *Daemon) API() *server.Server { return d.api }

// Run serves until ctx ends, then shuts down gracefully: listeners stop
// accepting, in-flight requests finish, reconcilers stop, and every model
// server is stopped (no process is left behind).
func (d *Daemon) Run(ctx context.Context) error {
	errc := make(chan error, len(d.servers))
	for i, srv := range d.servers {
		go func() {
			if err := srv.Serve(d.lns[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	rctx, stopRepos := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range d.repos {
		events := make(chan gitsource.Event)
		wg.Add(2)
		go func() { defer wg.Done(); _ = r.poller.Run(rctx, events) }()
		go func() { defer wg.Done(); _ = r.rec.Run(rctx, events) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		d.log.Error("server failed; shutting down", "err", err)
	}
	d.log.Info("shutting down: draining requests")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, srv := range d.servers {
		if e := srv.Shutdown(sctx); e != nil {
			d.log.Warn("drain incomplete", "err", e)
		}
	}
	stopRepos()
	wg.Wait()
	d.log.Info("stopping model servers")
	d.local.Close()
	d.log.Info("stopped")
	return err
}

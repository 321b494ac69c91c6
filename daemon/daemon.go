// Package daemon wires Merlin's parts into the running daemon: one git
// poller and one reconciler per repository, the target, the metrics
// provider, GitHub's webhooks (a push triggers the repository's poller,
// see hooks.go), and the HTTP servers (model endpoint and API), on sockets it
// binds or that a supervisor passes (socket activation, see activation.go:
// requests wait while a killed daemon restarts). `merlin run` and
// `merlin up` are thin layers over it.
package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/daemon/leader"
	"merlin.dev/merlin/gitsource"
	"merlin.dev/merlin/metrics"
	"merlin.dev/merlin/metrics/prom"
	"merlin.dev/merlin/reconciler"
	scm "merlin.dev/merlin/scm/github"
	"merlin.dev/merlin/server"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/local"
	"merlin.dev/merlin/webhooks"
)

// Options tune a daemon beyond its configuration.
type Options struct {
	// CombinedListen serves models and the API on one address (merlin up)
	// instead of local.listen and server.listen.
	CombinedListen string
	// Tick and StopTimeout override defaults (tests).
	Tick        time.Duration
	StopTimeout time.Duration
	// Limits override the defaults of every listener (tests).
	Limits  Limits
	Version string
	Logger  *slog.Logger
}

// Daemon is a running Merlin.
type Daemon struct {
	cfg  *Config
	opts Options
	log  *slog.Logger
	// target serves the models: local (processes behind local's router)
	// or kubernetes (local is nil).
	target serving.Target
	local  *local.Local
	// elector, when set, runs the reconcilers only while this replica
	// holds the leader Lease (target kubernetes).
	elector *leader.Elector
	// cluster, with target kubernetes, keeps the reconcilers' state.
	cluster  client.Client
	repos    []*repo
	api      *server.Server
	servers  []*http.Server
	lns      []net.Listener
	registry *prometheus.Registry
	// hooks receives GitHub's webhooks (nil without a github block).
	hooks *webhooks.Handler
	// commands run pull requests' comment commands, by repository name
	// (those with github.tokenEnv); ghMetrics counts their API calls.
	commands  map[string]*commands
	ghMetrics *scm.Metrics
	// pulls run pull requests' previews and reports, by repository name
	// (those with a github block).
	pulls map[string]*pulls
	// stats are the router's counters (local target), which the pull
	// requests' comments show.
	stats *metrics.Registry

	// What a reconciler is built from (see startReconcilers).
	stateDir string
	// bundles holds one builder directory per repository, so that each
	// reconciler prunes only what it alone refers to.
	bundles  string
	events   *prometheus.CounterVec
	provider metrics.Provider
	claims   *reconciler.Claims
	// lock is held on stateDir from New to the end of Run.
	lock *stateLock
}

type repo struct {
	cfg    Repository
	src    *gitsource.Source
	poller *gitsource.Poller
	// rec is set once the repository is reconciled here: at once, or, with
	// leader election, when this replica starts leading, so that it starts
	// from the state its predecessor saved last.
	rec atomic.Pointer[reconciler.Reconciler]
}

// New builds a daemon and opens its listeners, so that an address in use
// fails here rather than after start.
//
// The order matters on a restart: the state directory is locked first and
// the listeners are bound next, before the local target adopts the model
// servers a previous daemon left running, so that a second daemon on the
// same directory, or one whose port is taken, fails before touching them.
// A start that fails later (a corrupt state file) detaches from the
// adopted servers instead of stopping them, for the next start to adopt.
func New(cfg *Config, opts Options) (*Daemon, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	// Before anything starts: a control API open to the network is refused.
	access, err := apiAccess(cfg, opts)
	if err != nil {
		return nil, err
	}
	stateDir, err := filepath.Abs(cfg.Local.StateDir)
	if err != nil {
		return nil, err
	}
	// Private to the daemon: model servers reach their bundles through
	// descriptors (serving/local), and need not read other models' bundles
	// or logs.
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	lock, err := lockStateDir(stateDir)
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, opts: opts, log: log, registry: prometheus.NewRegistry(), stateDir: stateDir, claims: reconciler.NewClaims(), lock: lock}
	ok := false
	defer func() {
		if !ok {
			d.abandon()
		}
	}()
	// Before the listeners: a github block without its secret is refused.
	if d.hooks, err = d.newHooks(); err != nil {
		return nil, err
	}
	if err := d.bind(); err != nil {
		return nil, err
	}
	stats := metrics.NewRegistry()
	d.stats = stats
	switch cfg.Target {
	case "local":
		d.local, err = local.New(local.Options{
			StateDir: filepath.Join(stateDir, "local"), Python: cfg.Local.Python, Workers: cfg.Local.Workers,
			IdleTimeout: cfg.Local.IdleTimeout.D(), StopTimeout: opts.StopTimeout, RunAsUser: cfg.Local.RunAsUser,
			Version: opts.Version, Stats: stats, Logger: log,
			MaxRequestBytes: cfg.Local.MaxRequestBytes.Value(), MaxBufferedBytes: cfg.Local.MaxBufferedBytes.Value(),
			MaxConcurrency: cfg.Local.MaxConcurrency, MaxQueue: cfg.Local.MaxQueue, QueueTimeout: cfg.Local.QueueTimeout.D(),
		})
		if err == nil {
			d.target = d.local
		}
	case "kubernetes":
		err = d.connectCluster()
	default:
		err = fmt.Errorf("target %q: use local or kubernetes", cfg.Target)
	}
	if err != nil {
		return nil, err
	}
	d.bundles, d.events = filepath.Join(stateDir, "bundles"), reconciler.NewRolloutEvents()
	if d.provider, err = newProvider(cfg, stats); err != nil {
		return nil, err
	}
	for _, rc := range cfg.Repositories {
		r, err := d.newRepo(rc)
		if err != nil {
			return nil, err
		}
		d.repos = append(d.repos, r)
	}
	if d.elector == nil {
		if err := d.startReconcilers(context.Background()); err != nil {
			return nil, err
		}
	}
	d.registry.MustRegister(stats, d.events, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.api = d.newAPI(access)
	d.serve()
	ok = true
	return d, nil
}

// newAPI builds the API server on the daemon's parts.
func (d *Daemon) newAPI(access access) *server.Server {
	repos := make([]server.Repo, len(d.repos))
	for i, r := range d.repos {
		repos[i] = r
	}
	sopts := server.Options{Repos: repos, Sources: d.sources, Gatherer: d.registry, Version: d.opts.Version,
		Token: access.token, AllowedHosts: access.hosts}
	if d.hooks != nil {
		sopts.Hooks = d.hooks
	}
	if d.elector != nil {
		sopts.Gate = d.leaderOnly
	}
	return server.New(sopts)
}

// abandon undoes a failed New: the model servers are left running (see
// local.Local.Detach), the listeners closed, the state directory unlocked.
func (d *Daemon) abandon() {
	if d.local != nil {
		d.local.Detach()
	} else if c, ok := d.target.(io.Closer); ok {
		_ = c.Close()
	}
	for _, ln := range d.lns {
		ln.Close()
	}
	d.lock.release()
}

// access is who may call the API: the bearer token rollout commands need
// and the Host names requests may give (none: any).
type access struct {
	token string
	hosts []string
}

// apiAccess reads the API token (server.tokenEnv) and refuses an API
// reachable beyond loopback without one: anyone who reaches the port could
// promote or roll back. A loopback API checks the Host of every request,
// so that a web page cannot reach it by rebinding its own DNS name to
// 127.0.0.1.
func apiAccess(cfg *Config, opts Options) (access, error) {
	var a access
	if env := cfg.Server.TokenEnv; env != "" {
		if a.token = os.Getenv(env); a.token == "" {
			return a, fmt.Errorf("server.tokenEnv: environment variable %s is empty; set it to the API token", env)
		}
	}
	addr := cmp.Or(opts.CombinedListen, cfg.Server.Listen)
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return a, fmt.Errorf("API address %q: %w", addr, err)
	}
	loopback := host != "" && server.IsLoopbackHost(host)
	if !loopback && a.token == "" {
		return a, fmt.Errorf("the API on %s is reachable beyond this machine, and would let anyone who reaches it promote or roll back: "+
			"set server.tokenEnv to an environment variable holding a bearer token (merlin up: export MERLIN_API_TOKEN), or listen on 127.0.0.1", addr)
	}
	if loopback || len(cfg.Server.AllowedHosts) > 0 {
		a.hosts = append([]string{host}, cfg.Server.AllowedHosts...)
	}
	return a, nil
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

func (d *Daemon) newRepo(rc Repository) (*repo, error) {
	auth := gitsource.Auth{Username: rc.Auth.Username, SSHKeyFile: rc.Auth.SSHKeyFile, SSHKnownHosts: rc.Auth.SSHKnownHosts}
	if rc.Auth.TokenEnv != "" {
		auth.Token = os.Getenv(rc.Auth.TokenEnv)
		if auth.Token == "" {
			return nil, fmt.Errorf("repository %s: environment variable %s (auth.tokenEnv) is empty", rc.Name, rc.Auth.TokenEnv)
		}
	}
	src, err := gitsource.New(gitsource.Config{
		Name: rc.Name, URL: rc.URL, Branch: rc.Branch, Auth: auth, CacheDir: filepath.Join(d.stateDir, "git", rc.Name),
	}, d.log)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", rc.Name, err)
	}
	// An unreachable remote is retried with a backoff that scales with how
	// often the repository is polled: 30 intervals, within [10s, 5m].
	backoffCap := min(max(30*rc.Interval.D(), 10*time.Second), 5*time.Minute)
	poller := gitsource.NewPoller(src, gitsource.PollerConfig{Interval: rc.Interval.D(), BackoffCap: backoffCap})
	return &repo{cfg: rc, src: src, poller: poller}, nil
}

// startReconcilers builds every repository's reconciler, which loads the
// state saved by the previous run (or the previous leader).
func (d *Daemon) startReconcilers(ctx context.Context) error {
	for _, r := range d.repos {
		store, err := d.stateStore(r.cfg.Name)
		if err != nil {
			return err
		}
		b, err := builder.New(filepath.Join(d.bundles, r.cfg.Name))
		if err != nil {
			return err
		}
		rec, err := reconciler.New(ctx, reconciler.Config{
			Repo: r.cfg.Name, URL: r.src.URL(), Paths: r.cfg.Paths, StateDir: d.stateDir, State: store, Tick: d.opts.Tick,
			TargetName: d.cfg.Target, RolloutEvents: d.events,
		}, r.src, d.target, b, d.provider, d.claims, d.log)
		if err != nil {
			return err
		}
		r.rec.Store(rec)
	}
	return nil
}

func (d *Daemon) sources() map[string]gitsource.Status {
	out := map[string]gitsource.Status{}
	for _, r := range d.repos {
		out[r.src.Name()] = r.poller.Status()
	}
	return out
}

// bind opens the listeners: one combined, or models and API apart. On a
// cluster the models are served by the cluster, so only the API is. The
// sockets a supervisor passed (socket activation, see activation.go) are
// used for the addresses they serve; the others are bound here.
func (d *Daemon) bind() error {
	roles := d.listenRoles()
	passed, note, err := takeActivated()
	if note != "" {
		d.log.Warn(note)
	}
	if err != nil {
		return err
	}
	socks := make([]socket, len(passed))
	for i, p := range passed {
		socks[i] = socket{name: p.name, addr: p.ln.Addr().(*net.TCPAddr)}
	}
	use, err := assignSockets(roles, socks)
	if err != nil {
		for _, p := range passed {
			p.ln.Close()
		}
		return err
	}
	for i, r := range roles {
		if j := use[i]; j >= 0 {
			d.log.Info("serving on a socket passed by the supervisor", "socket", r.names[0], "addr", passed[j].ln.Addr().String())
			d.lns = append(d.lns, passed[j].ln)
			continue
		}
		if len(passed) > 0 {
			d.log.Warn("socket activation passed no socket for this address: bound here, so it refuses connections while the daemon restarts", "socket", r.names[0], "addr", r.addr)
		}
		ln, err := net.Listen("tcp", r.addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", r.addr, err)
		}
		d.lns = append(d.lns, ln)
	}
	return nil
}

// listenRoles are the addresses bind serves, in the order of d.lns: the
// models first (when served here), the API last.
func (d *Daemon) listenRoles() []listenRole {
	switch {
	case d.cfg.Target == "local" && d.opts.CombinedListen != "":
		return []listenRole{{names: []string{SocketModels, SocketAPI}, addr: d.opts.CombinedListen}}
	case d.cfg.Target == "local":
		return []listenRole{{names: []string{SocketModels}, addr: d.cfg.Local.Listen}, {names: []string{SocketAPI}, addr: d.cfg.Server.Listen}}
	default:
		return []listenRole{{names: []string{SocketAPI}, addr: cmp.Or(d.opts.CombinedListen, d.cfg.Server.Listen)}}
	}
}

// serve makes the HTTP servers of the listeners bind opened.
func (d *Daemon) serve() {
	handlers := []http.Handler{d.api}
	switch {
	case d.local != nil && d.opts.CombinedListen != "":
		mux := http.NewServeMux()
		mux.Handle("/v1/", d.local)
		mux.Handle("/v2/", d.local)
		mux.Handle("/v2", d.local) // OIP server metadata, not a redirect to /v2/
		mux.Handle("/", d.api)
		handlers = []http.Handler{mux}
	case d.local != nil:
		handlers = []http.Handler{d.local, d.api}
	}
	for _, h := range handlers {
		d.servers = append(d.servers, d.opts.Limits.server(h))
	}
}

// ModelsAddr is where models are served: the router's address, or on a
// cluster the host name the VirtualServices answer for.
func (d *Daemon) ModelsAddr() string {
	if d.local == nil {
		return d.cfg.Kubernetes.Host
	}
	return d.lns[0].Addr().String()
}

// APIAddr is where the API, status page and /metrics are served.
func (d *Daemon) APIAddr() string { return d.lns[len(d.lns)-1].Addr().String() }

// API returns the API server (for status printing).
func (d *Daemon) API() *server.Server { return d.api }

// Run serves until ctx ends, then shuts down gracefully: reconcilers stop
// (a leader then releases its Lease) while listeners stop accepting and
// in-flight requests finish, and every model server is stopped, those
// still starting included (no process is left behind; see local.Close).
// With leader election, losing the Lease also ends Run, with an error:
// the process exits and comes back as a follower.
func (d *Daemon) Run(ctx context.Context) error {
	errc := make(chan error, len(d.servers)+1)
	for i, srv := range d.servers {
		go func() {
			if err := srv.Serve(d.opts.Limits.listener(d.lns[i])); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	rctx, stopRepos := context.WithCancel(context.Background())
	reposDone := make(chan struct{})
	if d.hooks != nil {
		hooksDone := make(chan struct{})
		go func() { defer close(hooksDone); d.hooks.Run(rctx, hookSink{d}) }()
		for _, p := range d.pulls {
			p.start(rctx)
		}
		defer func() {
			<-hooksDone
			for _, c := range d.commands {
				c.wg.Wait()
			}
			for _, p := range d.pulls {
				p.wait()
			}
		}()
	}
	go func() {
		defer close(reposDone)
		if err := d.reconcile(rctx); err != nil {
			errc <- err
		}
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		d.log.Error("server failed; shutting down", "err", err)
	}
	// The reconcilers stop first, while requests drain: a daemon stopped
	// in the middle of a burst of deployments starts no more model servers.
	d.log.Info("shutting down: stopping reconcilers, draining requests")
	stopRepos()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, srv := range d.servers {
		if e := srv.Shutdown(sctx); e != nil {
			d.log.Warn("drain incomplete", "err", e)
		}
	}
	<-reposDone
	d.closeTarget()
	d.lock.release()
	d.log.Info("stopped")
	return err
}

// reconcile runs the git pollers and reconcilers until ctx ends: at once,
// or, with leader election, once and while this replica leads.
func (d *Daemon) reconcile(ctx context.Context) error {
	if d.elector == nil {
		d.runRepos(ctx)
		return nil
	}
	var startErr error
	err := d.elector.Run(ctx, func(ctx context.Context) {
		if startErr = d.startReconcilers(ctx); startErr != nil {
			return
		}
		d.runRepos(ctx)
	})
	if startErr != nil {
		return startErr
	}
	return err
}

// runRepos polls and reconciles every repository until ctx ends.
func (d *Daemon) runRepos(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range d.repos {
		events := make(chan gitsource.Event)
		rec := r.rec.Load()
		wg.Add(2)
		go func() { defer wg.Done(); _ = r.poller.Run(ctx, events) }()
		go func() { defer wg.Done(); _ = rec.Run(ctx, events) }()
	}
	wg.Wait()
}

func (d *Daemon) closeTarget() {
	if d.local != nil {
		d.log.Info("stopping model servers")
		d.local.Close()
	}
	if c, ok := d.target.(io.Closer); ok && d.local == nil {
		_ = c.Close()
	}
}

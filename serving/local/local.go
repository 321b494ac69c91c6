package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"merlin.dev/merlin/metrics"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/local/modelserver"
)

// Options configure the local target.
type Options struct {
	// StateDir holds model-server logs, the Python package they run and the state
	// that lets a restarted daemon adopt running servers. Required.
	StateDir string
	// Python is the interpreter for model servers; empty means Debian's
	// /usr/bin/python3, checked at start.
	Python string
	// Workers is the number of processes per model server (pre-forked,
	// sharing the socket); 0 means 1.
	Workers int
	// IdleTimeout stops a version with replicas.min 0 after this long
	// without requests; the next request starts it again. Default 10m.
	IdleTimeout time.Duration
	// DrainTimeout bounds how long a removed version may finish its
	// in-flight requests before it is stopped. Default 30s.
	DrainTimeout time.Duration
	// StopTimeout is the grace period between SIGTERM and SIGKILL. Default 10s.
	StopTimeout time.Duration
	// OrphanTimeout is how long a model server outlives a killed daemon
	// without requests before it exits by itself. Default 5m.
	OrphanTimeout time.Duration
	// MirrorConcurrency bounds mirrored and comparison requests in flight;
	// beyond it they are dropped (and counted). Default 64.
	MirrorConcurrency int
	// RunAsUser is the user model servers run as when the daemon runs as
	// root; empty means DefaultRunAsUser, "root" keeps root. A daemon that
	// is not root runs them as itself and refuses another user.
	RunAsUser string
	// Version is the daemon's, reported by the router's OIP server
	// metadata (GET /v2). Default "dev".
	Version string
	// MaxRequestBytes refuses larger request bodies with 413: at once when
	// the client states a Content-Length, else as soon as the body passes
	// it. Default DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// MaxBufferedBytes bounds the request bytes the router holds in memory
	// at once, across models: bodies read before they are sent (and kept
	// for mirrors), and a copy buffer per streamed body. A request that
	// does not fit waits like a queued one, then gets 503. Default 64 MiB,
	// and never below MaxRequestBytes.
	MaxBufferedBytes int64
	// MaxConcurrency is how many requests of one model the router sends to
	// its versions at once. Default 64.
	MaxConcurrency int
	// MaxQueue is how many more requests of a model (and of the byte
	// budget) may wait, each up to QueueTimeout; beyond, 429 with
	// Retry-After. Default 64; negative: none wait.
	MaxQueue int
	// QueueTimeout bounds the wait of a queued request. Default 1s.
	QueueTimeout time.Duration
	// Stats receives per-version request metrics; a new registry when nil.
	Stats  *metrics.Registry
	Logger *slog.Logger
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.IdleTimeout, 10*time.Minute)
	def(&o.DrainTimeout, 30*time.Second)
	def(&o.StopTimeout, 10*time.Second)
	def(&o.OrphanTimeout, 5*time.Minute)
	if o.MirrorConcurrency == 0 {
		o.MirrorConcurrency = 64
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	o.MaxBufferedBytes = max(o.MaxBufferedBytes, o.MaxRequestBytes)
	if o.MaxConcurrency <= 0 {
		o.MaxConcurrency = DefaultMaxConcurrency
	}
	if o.MaxQueue == 0 {
		o.MaxQueue = DefaultMaxQueue
	}
	def(&o.QueueTimeout, time.Second)
	if o.Stats == nil {
		o.Stats = metrics.NewRegistry()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Local runs one model-server process per version on this machine and
// routes requests to them. It is an http.Handler (the router) and a
// serving.Target.
//
// It converges like a controller: Apply records a model's desired
// deployment, starts the versions that are missing and routes what
// serving.Route allows, then returns. Whenever a version's state changes,
// its process kicks a loop (converge) that routes every model again, so
// traffic moves to a version as soon as it is ready, and the versions
// that no model keeps any more are drained and stopped.
type Local struct {
	opts      Options
	log       *slog.Logger
	serverPkg string // the installed model-server package (modelserver.Install)
	python    string
	runAs     *runAs // who model servers run as; nil: the daemon's user
	probe     *http.Client
	stats     *metrics.Registry
	mirrorSem chan struct{}
	bytes     *limiter // request bytes in memory

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// detached is set by Detach: ending a process leaves its server running.
	detached atomic.Bool
	// children are the servers started and not reaped yet (see Close).
	children children

	mu    sync.Mutex          // before any process's mu
	procs map[string]*process // by version ID
	// deployments are the desired state, by model.
	deployments map[string]serving.Deployment
	// routing is what each model routes now (serving.Route's answer).
	routing map[string]serving.Routing
	// conds are each model's last conditions, kept so that their
	// transition times stay put while nothing changes.
	conds   map[string][]serving.Condition
	gates   map[string]*limiter // each model's requests in flight
	routes  atomic.Pointer[routeTable]
	kick    chan struct{} // a version changed state: converge
	changes chan struct{}
}

var (
	_ serving.Target   = (*Local)(nil)
	_ serving.Notifier = (*Local)(nil)
	_ serving.Comparer = (*Local)(nil)
)

// New starts the local target. It restores the deployments a previous
// daemon left in StateDir: model servers still running are adopted, the
// others are started again, and the router serves the same traffic split
// before the first reconcile.
func New(opts Options) (*Local, error) {
	opts.defaults()
	if opts.StateDir == "" {
		return nil, errors.New("local target: stateDir is required")
	}
	for _, d := range []string{"logs", "run"} {
		if err := os.MkdirAll(filepath.Join(opts.StateDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("local target: %w", err)
		}
	}
	runAs, err := lookupRunAs(os.Geteuid(), opts.RunAsUser)
	if err != nil {
		return nil, fmt.Errorf("local target: %w", err)
	}
	if runAs != nil {
		opts.Logger.Info("model servers run as another user", "user", runAs.name, "uid", runAs.uid, "gid", runAs.gid)
	}
	python := opts.Python
	if python == "" {
		var err error
		if python, err = modelserver.Python(); err != nil {
			return nil, fmt.Errorf("local target: %w", err)
		}
	}
	if runAs != nil {
		if err := runAs.check(python); err != nil {
			return nil, fmt.Errorf("local target: %w", err)
		}
	}
	serverPkg, err := modelserver.Install(filepath.Join(opts.StateDir, "bin"))
	if err != nil {
		return nil, fmt.Errorf("local target: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Local{
		opts: opts, log: opts.Logger, serverPkg: serverPkg, python: python, runAs: runAs, stats: opts.Stats,
		probe:       &http.Client{Timeout: 2 * time.Second},
		mirrorSem:   make(chan struct{}, opts.MirrorConcurrency),
		bytes:       newLimiter(opts.MaxBufferedBytes, max(opts.MaxQueue, 0)),
		gates:       map[string]*limiter{},
		ctx:         ctx,
		cancel:      cancel,
		procs:       map[string]*process{},
		deployments: map[string]serving.Deployment{},
		routing:     map[string]serving.Routing{},
		conds:       map[string][]serving.Condition{},
		kick:        make(chan struct{}, 1),
		changes:     make(chan struct{}, 1),
	}
	l.routes.Store(&routeTable{models: map[string]*modelRoutes{}})
	if err := l.restore(); err != nil {
		cancel()
		return nil, err
	}
	l.wg.Add(1)
	go l.convergeLoop()
	return l, nil
}

// Changes signals (coalesced) whenever a version becomes ready or fails,
// once the target has routed its model again, so the reconciler can act at
// once instead of on its next tick.
func (l *Local) Changes() <-chan struct{} { return l.changes }

// ComparesPredictions implements serving.Comparer: the router compares
// every mirrored answer and the sampled requests of Deployment.Compare.
func (l *Local) ComparesPredictions() {}

func (l *Local) notify() {
	select {
	case l.changes <- struct{}{}:
	default:
	}
}

// versionChanged is called by a process (outside its lock) when its state
// changed: the convergence loop routes again.
func (l *Local) versionChanged() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// convergeLoop routes every model again whenever a version changed state,
// then tells the reconciler. It owns convergence between Applies; kicks
// are coalesced, and converging every model is cheap (a few maps).
func (l *Local) convergeLoop() {
	defer l.wg.Done()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.kick:
		}
		l.mu.Lock()
		if l.ctx.Err() == nil { // Close may be waiting for the retirements' goroutines
			l.convergeAllLocked()
		}
		l.mu.Unlock()
		l.notify()
	}
}

// Stats returns the registry the router records into.
func (l *Local) Stats() *metrics.Registry { return l.stats }

// Apply implements serving.Target. It records d, starts the versions that
// are missing and routes what serving.Route allows now; it never waits for
// a version to become ready (the convergence loop moves traffic when it
// is).
func (l *Local) Apply(_ context.Context, d serving.Deployment) error {
	if err := d.Validate(); err != nil {
		return err
	}
	d = d.Clone()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		return errors.New("local target: closed")
	}
	for _, v := range d.Versions {
		l.startLocked(v, nil)
	}
	l.deployments[d.Model] = d
	l.convergeLocked(d.Model)
	l.publishLocked()
	return l.persistLocked()
}

// ready is serving.Route's view of a version: it answers requests, or is
// scaled to zero and starts on the next one. The caller holds l.mu.
func (l *Local) readyLocked(id string) bool {
	p := l.procs[id]
	return p != nil && p.servable()
}

// convergeLocked routes model as far as readiness allows and retires the
// versions of the model that it no longer keeps. It reports whether the
// routed split or the running versions changed; the caller publishes.
func (l *Local) convergeLocked(model string) bool {
	d, ok := l.deployments[model]
	if !ok {
		return false
	}
	prev := l.routing[model]
	r := serving.Route(d, prev.Traffic, l.readyLocked)
	l.routing[model] = r
	changed := !maps.Equal(prev.Traffic, r.Traffic)
	if changed {
		l.log.Info("routing", "model", model, "traffic", r.Traffic, "waiting", r.Waiting)
	}
	for id, p := range l.procs {
		if p.v.Model == model && !slices.Contains(r.Keep, id) {
			l.retireLocked(p)
			changed = true
		}
	}
	return changed
}

// convergeAllLocked converges every model, and publishes and persists
// what changed.
func (l *Local) convergeAllLocked() {
	changed := false
	for model := range l.deployments {
		if l.convergeLocked(model) {
			changed = true
		}
	}
	if !changed {
		return
	}
	l.publishLocked()
	if err := l.persistLocked(); err != nil {
		l.log.Warn("cannot save the routed traffic", "err", err)
	}
}

// startLocked returns the supervised process of a version, starting it
// (or adopting rec) when there is none.
func (l *Local) startLocked(v serving.Version, rec *record) *process {
	if p := l.procs[v.ID]; p != nil {
		p.update(v)
		return p
	}
	p := newProcess(l, v)
	ctx, cancel := context.WithCancel(l.ctx)
	p.cancel = cancel
	l.procs[v.ID] = p
	l.stats.For(v.Model, v.ID)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		p.run(ctx, rec)
	}()
	return p
}

// retireLocked stops routing new requests to a version, lets its
// in-flight requests finish, then stops its server.
func (l *Local) retireLocked(p *process) {
	delete(l.procs, p.v.ID)
	p.retired.Store(true)
	p.setState(serving.StateStopping, "", "")
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		deadline := time.Now().Add(l.opts.DrainTimeout)
		for p.inflight.Load() > 0 && time.Now().Before(deadline) && l.ctx.Err() == nil { // Close does not wait
			time.Sleep(5 * time.Millisecond)
		}
		p.cancel()
		<-p.done
		p.closeConns()
		l.mu.Lock()
		if l.procs[p.v.ID] == nil { // not applied again while it drained
			l.removeRecord(p.v.ID)
			l.stats.Forget(p.v.ID)
		}
		running := make(map[string]bool, len(l.procs))
		for id := range l.procs {
			running[id] = true
		}
		l.mu.Unlock()
		l.pruneLogs(running)
		p.log.Info("version stopped")
	}()
}

// Delete implements serving.Target.
func (l *Local) Delete(_ context.Context, model string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.deployments, model)
	delete(l.routing, model)
	delete(l.conds, model)
	delete(l.gates, model)
	l.publishLocked()
	for _, p := range l.procs {
		if p.v.Model == model {
			l.retireLocked(p)
		}
	}
	return l.persistLocked()
}

// Status implements serving.Target. It lists, per model, the versions the
// model keeps (the desired ones and those still routed), each with the
// weight routed now.
func (l *Local) Status(context.Context) ([]serving.ModelStatus, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	out := make([]serving.ModelStatus, 0, len(l.deployments))
	for _, m := range slices.Sorted(maps.Keys(l.deployments)) {
		d, r := l.deployments[m], l.routing[m]
		ms := serving.ModelStatus{Name: m, Mirrors: slices.Clone(d.Mirrors)}
		for _, id := range r.Keep {
			p := l.procs[id]
			if p == nil {
				continue
			}
			vs := p.status()
			vs.Weight = r.Traffic[id]
			vs.Comparison = l.comparison(d, id)
			ms.Versions = append(ms.Versions, vs)
		}
		if len(ms.Mirrors) > 0 {
			ms.Mirror = &ms.Mirrors[0]
		}
		l.conds[m] = serving.ModelConditions(l.conds[m], r, ms.Versions, now)
		ms.Conditions = slices.Clone(l.conds[m])
		out = append(out, ms)
	}
	return out, nil
}

// comparison reads a version's prediction comparisons from the router's
// stats: for a mirror or a compared canary always, for another version
// only once something was compared.
func (l *Local) comparison(d serving.Deployment, id string) *serving.Comparison {
	s := l.stats.Lookup(id)
	if s == nil {
		return nil
	}
	snap := s.Snapshot(time.Now())
	compared := slices.ContainsFunc(d.Mirrors, func(m serving.Mirror) bool { return m.Version == id }) ||
		(d.Compare != nil && d.Compare.Version == id)
	if !compared && snap.Agree+snap.Disagree+snap.CmpFail == 0 {
		return nil
	}
	c := &serving.Comparison{Requests: snap.Requests, Agree: snap.Agree, Disagree: snap.Disagree, Failed: snap.CmpFail}
	if n := c.Agree + c.Disagree; n > 0 {
		c.Agreement = float64(c.Agree) / float64(n)
	}
	return c
}

// Detach stops supervising the model servers without stopping them: they
// keep serving and their records stay in StateDir, so that the next daemon
// adopts them. A daemon whose start fails after this target restored the
// deployments detaches instead of closing: a failed start (a corrupt state
// file, a port in use) must not take down the models that a crashed daemon
// left serving. Servers the daemon started itself are left too: once it
// exits, one that nobody adopts stops by itself after OrphanTimeout without
// requests. Close after Detach has nothing left to stop.
func (l *Local) Detach() {
	l.detached.Store(true)
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, p := range l.procs {
		p.closeConns()
		delete(l.procs, id)
	}
	l.log.Info("detached from the model servers; they keep running for the next daemon to adopt")
}

// Close stops every model server (SIGTERM, then SIGKILL after the grace
// period) and waits for them. The deployments stay recorded in StateDir,
// so the next daemon starts them again.
//
// It stops every server it started, the ones still loading included, in
// a bounded time: see stopAll.
func (l *Local) Close() error {
	l.stopAll()
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, p := range l.procs {
		p.closeConns()
		l.removeRecord(id)
	}
	return nil
}

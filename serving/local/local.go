package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"merlin.dev/merlin/metrics"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/local/modelserver"
)

// Options configure the local target.
type Options struct {
	// StateDir holds model-server logs, the scripts they run and the state
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
	// ReadyTimeout bounds how long Apply waits for new versions. Default 2m.
	ReadyTimeout time.Duration
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
	def(&o.ReadyTimeout, 2*time.Minute)
	def(&o.DrainTimeout, 30*time.Second)
	def(&o.StopTimeout, 10*time.Second)
	def(&o.OrphanTimeout, 5*time.Minute)
	if o.MirrorConcurrency == 0 {
		o.MirrorConcurrency = 64
	}
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
type Local struct {
	opts      Options
	log       *slog.Logger
	script    string
	python    string
	probe     *http.Client
	stats     *metrics.Registry
	mirrorSem chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	procs       map[string]*process // by version ID
	deployments map[string]serving.Deployment
	modelLocks  map[string]*sync.Mutex
	routes      atomic.Pointer[routeTable]
	changes     chan struct{}
}

var _ serving.Target = (*Local)(nil)

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
	python := opts.Python
	if python == "" {
		var err error
		if python, err = modelserver.Python(); err != nil {
			return nil, fmt.Errorf("local target: %w", err)
		}
	}
	script, err := modelserver.WriteScript(filepath.Join(opts.StateDir, "bin"))
	if err != nil {
		return nil, fmt.Errorf("local target: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Local{
		opts: opts, log: opts.Logger, script: script, python: python, stats: opts.Stats,
		probe:       &http.Client{Timeout: 2 * time.Second},
		mirrorSem:   make(chan struct{}, opts.MirrorConcurrency),
		ctx:         ctx,
		cancel:      cancel,
		procs:       map[string]*process{},
		deployments: map[string]serving.Deployment{},
		modelLocks:  map[string]*sync.Mutex{},
		changes:     make(chan struct{}, 1),
	}
	l.routes.Store(&routeTable{models: map[string]*modelRoutes{}})
	if err := l.restore(); err != nil {
		cancel()
		return nil, err
	}
	return l, nil
}

// Changes signals (coalesced) whenever a version becomes ready or fails,
// so the reconciler can act at once instead of on its next tick.
func (l *Local) Changes() <-chan struct{} { return l.changes }

func (l *Local) notify() {
	select {
	case l.changes <- struct{}{}:
	default:
	}
}

// Stats returns the registry the router records into.
func (l *Local) Stats() *metrics.Registry { return l.stats }

func (l *Local) lockModel(model string) func() {
	l.mu.Lock()
	m := l.modelLocks[model]
	if m == nil {
		m = &sync.Mutex{}
		l.modelLocks[model] = m
	}
	l.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// Apply implements serving.Target.
func (l *Local) Apply(ctx context.Context, d serving.Deployment) error {
	if err := d.Validate(); err != nil {
		return err
	}
	defer l.lockModel(d.Model)()
	procs := make([]*process, 0, len(d.Versions))
	l.mu.Lock()
	for _, v := range d.Versions {
		procs = append(procs, l.startLocked(v, nil))
	}
	l.mu.Unlock()

	// Versions gaining client traffic must be ready first, so that traffic
	// never moves from a serving version to one that cannot answer. A
	// model that serves nothing yet has nothing to protect: its routes are
	// published at once and requests wait for the first start.
	l.mu.Lock()
	prev, live := l.deployments[d.Model]
	l.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	for i, p := range procs {
		if !live || d.Traffic[d.Versions[i].ID] == 0 || prev.Traffic[p.v.ID] > 0 {
			continue
		}
		if _, state := p.readyCh(); state == serving.StateIdle {
			continue // scaled to zero; it starts on demand
		}
		if err := p.awaitReady(rctx); err != nil {
			return fmt.Errorf("apply %s: %w", d.Model, err)
		}
	}

	l.mu.Lock()
	l.deployments[d.Model] = d
	l.publishLocked()
	err := l.persistLocked()
	for id, p := range l.procs {
		if p.v.Model == d.Model && !slices.ContainsFunc(d.Versions, func(v serving.Version) bool { return v.ID == id }) {
			l.retireLocked(p)
		}
	}
	l.mu.Unlock()
	return err
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
	p.setState(serving.StateStopping, "")
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		deadline := time.Now().Add(l.opts.DrainTimeout)
		for p.inflight.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		p.cancel()
		<-p.done
		if p.listener != nil {
			p.listener.Close()
		}
		p.upstream().closeIdle()
		l.removeRecord(p.v.ID)
		l.stats.Forget(p.v.ID)
		p.log.Info("version stopped")
	}()
}

// Delete implements serving.Target.
func (l *Local) Delete(_ context.Context, model string) error {
	defer l.lockModel(model)()
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.deployments, model)
	l.publishLocked()
	for _, p := range l.procs {
		if p.v.Model == model {
			l.retireLocked(p)
		}
	}
	return l.persistLocked()
}

// Status implements serving.Target.
func (l *Local) Status(context.Context) ([]serving.ModelStatus, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	models := make([]string, 0, len(l.deployments))
	for m := range l.deployments {
		models = append(models, m)
	}
	sort.Strings(models)
	out := make([]serving.ModelStatus, 0, len(models))
	for _, m := range models {
		d := l.deployments[m]
		ms := serving.ModelStatus{Model: m, Mirror: d.Mirror}
		for _, v := range d.Versions {
			if p := l.procs[v.ID]; p != nil {
				vs := p.status()
				vs.Weight = d.Traffic[v.ID]
				ms.Versions = append(ms.Versions, vs)
			}
		}
		out = append(out, ms)
	}
	return out, nil
}

// Close stops every model server (SIGTERM, then SIGKILL after the grace
// period) and waits for them. The deployments stay recorded in StateDir,
// so the next daemon starts them again.
func (l *Local) Close() error {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, p := range l.procs {
		if p.listener != nil {
			p.listener.Close()
		}
		p.upstream().closeIdle()
		l.removeRecord(id)
	}
	return nil
}

package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/fluxcd/pkg/ssa"
	kservev1beta1 "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
)

// FieldManager is the server-side apply field manager of every object
// Merlin applies.
const FieldManager = "merlin"

// Options configure the kubernetes target.
type Options struct {
	// Namespace, Gateway, Host, Registry and Runtimes: see Config.
	Namespace string
	Gateway   string
	Host      string
	Registry  string
	Runtimes  map[manifest.ModelType]string
	// PollInterval is how often the convergence loop reads the
	// InferenceServices of the models applied by this process, to move
	// traffic once their versions are ready. Default 2s.
	PollInterval time.Duration
	Logger       *slog.Logger
}

func (o *Options) config() Config {
	return Config{Namespace: o.Namespace, Gateway: o.Gateway, Host: o.Host, Registry: o.Registry, Runtimes: o.Runtimes}
}

// convergeTimeout bounds the convergence loop's work on one model, so that
// an API server that stops answering cannot stall the loop for the others.
const convergeTimeout = 30 * time.Second

// Kube serves models with KServe and routes them with Istio.
//
// It converges like a controller: Apply records a model's desired
// deployment, applies its InferenceServices and routes what serving.Route
// allows now, then returns. A loop started by New re-reads the
// InferenceServices and the VirtualService of every recorded model each
// PollInterval and routes again when the routing changed, so traffic
// moves as soon as KServe reports a version Ready. Close stops the loop.
type Kube struct {
	c    client.Client
	rm   *ssa.ResourceManager
	cfg  Config
	opts Options
	log  *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex // guards the fields below; never held while waiting for a model's lock
	// locks serialise the work on one model (Apply, Delete, the loop): a
	// channel with room for one holder, so that waiting for it respects
	// the caller's context.
	locks map[string]chan struct{}
	// deployments are the desired state applied by this process, by model.
	deployments map[string]serving.Deployment
	// seen is the loop's last reading of each model's versions, to notice
	// a change and signal it.
	seen map[string]map[string]versionState
	// conds and vconds are the last conditions reported by Status, by
	// model and by version, kept so that transition times stay put.
	conds   map[string][]serving.Condition
	vconds  map[string][]serving.Condition
	changes chan struct{}
}

var (
	_ serving.Target   = (*Kube)(nil)
	_ serving.Notifier = (*Kube)(nil)
	_ io.Closer        = (*Kube)(nil)
)

// Scheme knows the types the kubernetes target reads and writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(kservev1beta1.AddToScheme(s))
	utilruntime.Must(istionetworkingv1.AddToScheme(s))
	return s
}

// New returns the kubernetes target talking to the cluster at cfg and
// starts its convergence loop; Close stops it.
func New(cfg *rest.Config, opts Options) (*Kube, error) {
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("kubernetes target: %w", err)
	}
	return NewWithClient(c, opts)
}

// NewWithClient returns the kubernetes target using c, whose scheme must
// include Scheme's types, and starts its convergence loop; Close stops it.
func NewWithClient(c client.Client, opts Options) (*Kube, error) {
	cfg := opts.config()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kubernetes target: %w", err)
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Kube{
		c: c, rm: ssa.NewResourceManager(c, nil, ssa.Owner{Field: FieldManager, Group: "merlin.dev"}),
		cfg: cfg, opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel,
		locks: map[string]chan struct{}{}, deployments: map[string]serving.Deployment{},
		seen: map[string]map[string]versionState{}, conds: map[string][]serving.Condition{}, vconds: map[string][]serving.Condition{},
		changes: make(chan struct{}, 1),
	}
	k.wg.Add(1)
	go k.loop()
	return k, nil
}

// Changes implements serving.Notifier: it signals (coalesced) when a
// version's state changed or the loop moved traffic.
func (k *Kube) Changes() <-chan struct{} { return k.changes }

// Close stops the convergence loop and waits for it. What was applied
// stays in the cluster: the next daemon reads it back through Status.
func (k *Kube) Close() error {
	k.cancel()
	k.wg.Wait()
	return nil
}

func (k *Kube) notify() {
	select {
	case k.changes <- struct{}{}:
	default:
	}
}

// lockModel waits for model's lock, or for ctx to end; the returned
// function releases it.
func (k *Kube) lockModel(ctx context.Context, model string) (func(), error) {
	k.mu.Lock()
	l := k.locks[model]
	if l == nil {
		l = make(chan struct{}, 1)
		k.locks[model] = l
	}
	k.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s is busy: %w", model, context.Cause(ctx))
	}
}

// Apply implements serving.Target: it grows the model's inventory,
// applies the InferenceServices of every listed version, routes what
// serving.Route allows given which of them KServe reports Ready (see
// converge), prunes what the model no longer keeps and records d for the
// convergence loop. It never waits for a version to become ready.
func (k *Kube) Apply(ctx context.Context, d serving.Deployment) error {
	objs, err := Render(d, k.cfg)
	if err != nil {
		return err
	}
	if k.ctx.Err() != nil {
		return errors.New("kubernetes target: closed")
	}
	unlock, err := k.lockModel(ctx, d.Model)
	if err != nil {
		return fmt.Errorf("apply %s: %w", d.Model, err)
	}
	defer unlock()
	isvcs := make([]*unstructured.Unstructured, 0, len(objs.InferenceServices))
	listed := make([]string, 0, len(objs.InferenceServices))
	for _, o := range objs.InferenceServices {
		u, err := ToUnstructured(o)
		if err != nil {
			return fmt.Errorf("apply %s: %w", d.Model, err)
		}
		isvcs = append(isvcs, u)
		listed = append(listed, o.Name)
	}

	// The inventory grows before anything is created, so a version that is
	// created but never routed is still pruned later.
	inv, err := k.readInventory(ctx, d.Model)
	if err != nil {
		return err
	}
	if err := k.writeInventory(ctx, d.Model, union(inv, listed)); err != nil {
		return err
	}
	if _, err := k.rm.ApplyAll(ctx, isvcs, ssa.DefaultApplyOptions()); err != nil {
		return fmt.Errorf("apply %s: %w", d.Model, explain(err))
	}
	d = d.Clone()
	if err := k.converge(ctx, d, true); err != nil {
		return fmt.Errorf("apply %s: %w", d.Model, err)
	}
	k.mu.Lock()
	k.deployments[d.Model] = d
	k.mu.Unlock()
	return nil
}

// converge routes deployment d as far as its versions' readiness allows:
// it reads the model's InferenceServices and what its VirtualService
// routes now, lets plan (serving.Route) decide, applies the VirtualService
// when that differs from what it routes (or always, with force: Apply
// re-asserts every field merlin sets), and prunes the InferenceServices
// the model no longer keeps. The caller holds the model's lock.
func (k *Kube) converge(ctx context.Context, d serving.Deployment, force bool) error {
	isvcs, err := k.listVersions(ctx, d.Model)
	if err != nil {
		return err
	}
	states := make(map[string]versionState, len(isvcs))
	for _, isvc := range isvcs {
		states[isvc.Name] = readiness(isvc)
	}
	current, err := k.readRoute(ctx, d.Model)
	if err != nil {
		return err
	}
	r, next := plan(d, current, func(id string) bool { return states[id].servable() })

	k.noteStates(d.Model, states)

	if moved := !next.equal(current); force || moved {
		rd := d
		rd.Traffic, rd.Mirrors = next.Traffic, next.Mirrors
		u, err := ToUnstructured(VirtualService(rd, k.cfg))
		if err != nil {
			return err
		}
		if _, err := k.rm.Apply(ctx, u, ssa.DefaultApplyOptions()); err != nil {
			return explain(err)
		}
		if moved {
			k.log.Info("routing", "model", d.Model, "traffic", next.Traffic, "mirrors", next.Mirrors, "waiting", r.Waiting)
			k.notify()
		}
	}

	dropped := func(name string) bool { return !slices.Contains(r.Keep, name) }
	if !slices.ContainsFunc(isvcs, func(i *kservev1beta1.InferenceService) bool { return dropped(i.Name) }) {
		return nil
	}
	inv, err := k.readInventory(ctx, d.Model)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(inv, dropped) {
		return nil // what is left is someone else's
	}
	if err := k.prune(ctx, d.Model, inv, r.Keep); err != nil {
		return err
	}
	kept := slices.DeleteFunc(slices.Clone(inv), dropped)
	return k.writeInventory(ctx, d.Model, kept)
}

// noteStates records the states of model's versions and signals Changes
// when one changed since the last reading.
func (k *Kube) noteStates(model string, states map[string]versionState) {
	seen := make(map[string]versionState, len(states))
	for id, st := range states {
		st.Since = time.Time{} // when is not what changed
		seen[id] = st
	}
	k.mu.Lock()
	changed := !maps.Equal(k.seen[model], seen)
	k.seen[model] = seen
	k.mu.Unlock()
	if changed {
		k.notify()
	}
}

// listVersions reads the InferenceServices merlin labelled as model's.
func (k *Kube) listVersions(ctx context.Context, model string) ([]*kservev1beta1.InferenceService, error) {
	var list kservev1beta1.InferenceServiceList
	if err := k.c.List(ctx, &list, client.InNamespace(k.cfg.Namespace), client.MatchingLabels{LabelManagedBy: ManagedBy, LabelModel: model}); err != nil {
		return nil, fmt.Errorf("list InferenceServices of %s: %w", model, explain(err))
	}
	out := make([]*kservev1beta1.InferenceService, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// readRoute reads what model's VirtualService routes now (nothing when it
// does not exist yet).
func (k *Kube) readRoute(ctx context.Context, model string) (route, error) {
	var vs istionetworkingv1.VirtualService
	err := k.c.Get(ctx, client.ObjectKey{Namespace: k.cfg.Namespace, Name: model}, &vs)
	if apierrors.IsNotFound(err) {
		return route{}, nil
	}
	if err != nil {
		return route{}, fmt.Errorf("read VirtualService %s: %w", model, explain(err))
	}
	return routeOf(&vs), nil
}

// loop converges every model this process applied, each PollInterval,
// until Close.
func (k *Kube) loop() {
	defer k.wg.Done()
	tick := time.NewTicker(k.opts.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-tick.C:
		}
		k.mu.Lock()
		models := slices.Sorted(maps.Keys(k.deployments))
		k.mu.Unlock()
		for _, model := range models {
			if k.ctx.Err() != nil {
				return
			}
			if err := k.convergeModel(model); err != nil {
				k.log.Warn("cannot converge", "model", model, "err", err)
			}
		}
	}
}

// convergeModel converges one recorded model, unless it was deleted
// meanwhile.
func (k *Kube) convergeModel(model string) error {
	unlock, err := k.lockModel(k.ctx, model)
	if err != nil {
		return err
	}
	defer unlock()
	k.mu.Lock()
	d, ok := k.deployments[model]
	k.mu.Unlock()
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(k.ctx, convergeTimeout)
	defer cancel()
	return k.converge(ctx, d, false)
}

// prune deletes the model's InferenceServices that merlin applied (they
// are in the inventory and carry merlin's labels) and are not kept.
func (k *Kube) prune(ctx context.Context, model string, inventory, keep []string) error {
	var list kservev1beta1.InferenceServiceList
	if err := k.c.List(ctx, &list, client.InNamespace(k.cfg.Namespace), client.MatchingLabels{LabelManagedBy: ManagedBy, LabelModel: model}); err != nil {
		return fmt.Errorf("prune %s: list InferenceServices: %w", model, explain(err))
	}
	for i := range list.Items {
		isvc := &list.Items[i]
		if slices.Contains(keep, isvc.Name) || !slices.Contains(inventory, isvc.Name) {
			continue
		}
		if err := k.c.Delete(ctx, isvc, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("prune %s: delete InferenceService %s: %w", model, isvc.Name, explain(err))
		}
		k.log.Info("pruned version", "model", model, "version", isvc.Name)
	}
	return nil
}

// Delete implements serving.Target: it forgets the model's desired state,
// then deletes the VirtualService first (no more requests reach the
// versions), then the InferenceServices, then the inventory.
func (k *Kube) Delete(ctx context.Context, model string) error {
	unlock, err := k.lockModel(ctx, model)
	if err != nil {
		return fmt.Errorf("delete %s: %w", model, err)
	}
	defer unlock()
	k.mu.Lock()
	delete(k.deployments, model)
	delete(k.seen, model)
	delete(k.conds, model)
	k.mu.Unlock()
	vs := &istionetworkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: model, Namespace: k.cfg.Namespace}}
	if err := k.c.Get(ctx, client.ObjectKeyFromObject(vs), vs); err == nil && vs.Labels[LabelManagedBy] == ManagedBy {
		if err := k.c.Delete(ctx, vs); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s: VirtualService %s: %w", model, model, explain(err))
		}
	} else if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s: read VirtualService %s: %w", model, model, explain(err))
	}
	inv, err := k.readInventory(ctx, model)
	if err != nil {
		return err
	}
	if err := k.prune(ctx, model, inv, nil); err != nil {
		return err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: inventoryName(model), Namespace: k.cfg.Namespace}}
	if err := k.c.Delete(ctx, cm); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s: inventory: %w", model, explain(err))
	}
	return nil
}

// explain adds what to do about the API errors a user can fix.
func explain(err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w (merlin's service account lacks RBAC permission; see config/rbac)", err)
	case errors.Is(err, context.DeadlineExceeded):
		return err
	}
	if status, ok := apierrors.StatusCause(unwrapAPI(err), metav1.CauseTypeFieldManagerConflict); ok {
		return fmt.Errorf("%w (field %s is managed by another field manager)", err, status.Field)
	}
	return err
}

// unwrapAPI finds the API status error inside err.
func unwrapAPI(err error) error {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		if e, ok := se.(error); ok {
			return e
		}
	}
	return err
}

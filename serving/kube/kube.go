package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/ssa"
	kservev1beta1 "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// ReadyTimeout bounds how long Apply waits for the versions'
	// InferenceServices to become Ready before it gives up without moving
	// traffic. Default 5m.
	ReadyTimeout time.Duration
	// PollInterval is how often Apply checks readiness. Default 2s.
	PollInterval time.Duration
	Logger       *slog.Logger
}

func (o *Options) config() Config {
	return Config{Namespace: o.Namespace, Gateway: o.Gateway, Host: o.Host, Registry: o.Registry, Runtimes: o.Runtimes}
}

// Kube serves models with KServe and routes them with Istio.
type Kube struct {
	c    client.Client
	rm   *ssa.ResourceManager
	cfg  Config
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

var _ serving.Target = (*Kube)(nil)

// Scheme knows the types the kubernetes target reads and writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(kservev1beta1.AddToScheme(s))
	utilruntime.Must(istionetworkingv1.AddToScheme(s))
	return s
}

// New returns the kubernetes target talking to the cluster at cfg.
func New(cfg *rest.Config, opts Options) (*Kube, error) {
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("kubernetes target: %w", err)
	}
	return NewWithClient(c, opts)
}

// NewWithClient returns the kubernetes target using c, whose scheme must
// include Scheme's types.
func NewWithClient(c client.Client, opts Options) (*Kube, error) {
	cfg := opts.config()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kubernetes target: %w", err)
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 5 * time.Minute
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Kube{
		c: c, rm: ssa.NewResourceManager(c, nil, ssa.Owner{Field: FieldManager, Group: "merlin.dev"}),
		cfg: cfg, opts: opts, log: opts.Logger, locks: map[string]*sync.Mutex{},
	}, nil
}

func (k *Kube) lockModel(model string) func() {
	k.mu.Lock()
	m := k.locks[model]
	if m == nil {
		m = &sync.Mutex{}
		k.locks[model] = m
	}
	k.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// Apply implements serving.Target in stages: the InferenceServices, then,
// once every listed version is Ready, the VirtualService, then pruning of
// the model's InferenceServices that are no longer listed.
func (k *Kube) Apply(ctx context.Context, d serving.Deployment) error {
	objs, err := Render(d, k.cfg)
	if err != nil {
		return err
	}
	defer k.lockModel(d.Model)()
	all, err := objs.Unstructured()
	if err != nil {
		return err
	}
	isvcs, vs := all[:len(all)-1], all[len(all)-1]
	listed := make([]string, 0, len(isvcs))
	for _, o := range objs.InferenceServices {
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
	if err := k.waitReady(ctx, listed); err != nil {
		return fmt.Errorf("apply %s: %w", d.Model, err)
	}
	if _, err := k.rm.Apply(ctx, vs, ssa.DefaultApplyOptions()); err != nil {
		return fmt.Errorf("apply %s: %w", d.Model, explain(err))
	}
	if err := k.prune(ctx, d.Model, union(inv, listed), listed); err != nil {
		return err
	}
	return k.writeInventory(ctx, d.Model, listed)
}

// waitReady waits until every named InferenceService reports Ready=True
// for its current generation.
func (k *Kube) waitReady(ctx context.Context, names []string) error {
	deadline := time.Now().Add(k.opts.ReadyTimeout)
	tick := time.NewTicker(k.opts.PollInterval)
	defer tick.Stop()
	for {
		var pending []string
		for _, name := range names {
			var isvc kservev1beta1.InferenceService
			if err := k.c.Get(ctx, client.ObjectKey{Namespace: k.cfg.Namespace, Name: name}, &isvc); err != nil {
				return fmt.Errorf("read InferenceService %s: %w", name, err)
			}
			if st, msg, _ := readiness(&isvc); st != serving.StateReady {
				pending = append(pending, fmt.Sprintf("%s (%s)", name, cmpOr(msg, string(st))))
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w after %s: %s; traffic was not moved", serving.ErrNotReady, k.opts.ReadyTimeout, strings.Join(pending, ", "))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w: waiting for %s", serving.ErrNotReady, ctx.Err(), strings.Join(pending, ", "))
		case <-tick.C:
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// readiness maps an InferenceService's Ready condition to a state, with the
// condition's message and when it last changed. A Ready condition written
// for an older generation of the spec counts as not known yet.
func readiness(isvc *kservev1beta1.InferenceService) (serving.State, string, time.Time) {
	for _, c := range isvc.Status.Conditions {
		if c.Type != "Ready" {
			continue
		}
		since := c.LastTransitionTime.Inner.Time
		if og := isvc.Status.ObservedGeneration; og != 0 && og < isvc.Generation {
			return serving.StateStarting, "waiting for KServe to observe generation " + fmt.Sprint(isvc.Generation), since
		}
		switch c.Status {
		case corev1.ConditionTrue:
			return serving.StateReady, "", since
		case corev1.ConditionFalse:
			return serving.StateFailed, cmpOr(c.Message, c.Reason), since
		default:
			return serving.StateStarting, cmpOr(c.Message, c.Reason), since
		}
	}
	return serving.StateStarting, "", isvc.CreationTimestamp.Time
}

// prune deletes the model's InferenceServices that merlin applied (they
// are in the inventory and carry merlin's labels) and are not listed.
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

// Delete implements serving.Target: the VirtualService first (no more
// requests reach the versions), then the InferenceServices, then the
// inventory.
func (k *Kube) Delete(ctx context.Context, model string) error {
	defer k.lockModel(model)()
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

// Status implements serving.Target from the cluster alone, so a restarted
// daemon sees what its predecessor deployed.
func (k *Kube) Status(ctx context.Context) ([]serving.ModelStatus, error) {
	sel := client.MatchingLabels{LabelManagedBy: ManagedBy}
	var isvcs kservev1beta1.InferenceServiceList
	if err := k.c.List(ctx, &isvcs, client.InNamespace(k.cfg.Namespace), sel); err != nil {
		return nil, fmt.Errorf("status: list InferenceServices: %w", explain(err))
	}
	var vss istionetworkingv1.VirtualServiceList
	if err := k.c.List(ctx, &vss, client.InNamespace(k.cfg.Namespace), sel); err != nil {
		return nil, fmt.Errorf("status: list VirtualServices: %w", explain(err))
	}
	models := map[string]*serving.ModelStatus{}
	get := func(name string) *serving.ModelStatus {
		if models[name] == nil {
			models[name] = &serving.ModelStatus{Model: name}
		}
		return models[name]
	}
	weights := map[string]int{}
	for _, vs := range vss.Items {
		ms := get(vs.Labels[LabelModel])
		for _, r := range vs.Spec.Http {
			for _, dst := range r.Route {
				if dst.Destination != nil {
					weights[k.versionOf(dst.Destination.Host)] += int(dst.Weight)
				}
			}
			if r.Mirror != nil {
				pct := 100
				if r.MirrorPercentage != nil {
					pct = int(r.MirrorPercentage.Value)
				}
				ms.Mirror = &serving.Mirror{Version: k.versionOf(r.Mirror.Host), Percent: pct}
			}
		}
	}
	for i := range isvcs.Items {
		isvc := &isvcs.Items[i]
		ms := get(isvc.Labels[LabelModel])
		st, msg, since := readiness(isvc)
		ms.Versions = append(ms.Versions, serving.VersionStatus{
			Version: isvc.Name, Weight: weights[isvc.Name], State: st,
			Endpoint: PredictorHost(isvc.Name, k.cfg.Namespace), LastError: msg, Since: since,
		})
	}
	out := make([]serving.ModelStatus, 0, len(models))
	for _, ms := range models {
		sort.Slice(ms.Versions, func(i, j int) bool { return ms.Versions[i].Version < ms.Versions[j].Version })
		out = append(out, *ms)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Model < out[j].Model })
	return out, nil
}

// versionOf reads the version ID back from a predictor host.
func (k *Kube) versionOf(host string) string {
	id, _, _ := strings.Cut(host, ".")
	return strings.TrimSuffix(id, "-predictor")
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

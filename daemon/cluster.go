package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"merlin.dev/merlin/daemon/leader"
	"merlin.dev/merlin/reconciler"
	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving/kube"
)

// connectCluster builds the kubernetes target and, when enabled, the
// leader elector. The cluster is found as controller-runtime finds it: the
// --kubeconfig flag, KUBECONFIG, the in-cluster service account, then
// ~/.kube/config. Nothing is read from the cluster yet.
func (d *Daemon) connectCluster() error {
	rc, err := ctrlconfig.GetConfig()
	if err != nil {
		return fmt.Errorf("target kubernetes: find the cluster (in a pod: its service account; outside: KUBECONFIG): %w", err)
	}
	k := d.cfg.Kubernetes
	// Apply records the deployment and returns; the target moves traffic
	// once the versions are ready, so one slow predictor (an image pull,
	// a scale-up) never holds up the other models.
	kt, err := kube.New(rc, kube.Options{Namespace: k.Namespace, Gateway: k.Gateway, Host: k.Host, Registry: k.Registry, Logger: d.log})
	if err != nil {
		return err
	}
	d.target = kt
	// Rollout state lives in the models namespace, so that whichever
	// replica leads next resumes the rollouts.
	if d.cluster, err = client.New(rc, client.Options{Scheme: kube.Scheme()}); err != nil {
		return fmt.Errorf("target kubernetes: %w", err)
	}
	le := k.LeaderElection
	if !le.On() {
		return nil
	}
	// client-go's leader election logs through klog; keep one log stream.
	klog.SetSlogLogger(d.log.With("component", "leaderelection"))
	id, err := leader.Identity()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	d.elector, err = leader.New(cs, leader.Config{
		Namespace: cmp.Or(le.Namespace, leader.PodNamespace(), k.Namespace), Name: le.LeaseName, Identity: id,
		LeaseDuration: le.LeaseDuration.D(), RenewDeadline: le.RenewDeadline.D(), RetryPeriod: le.RetryPeriod.D(),
	}, d.log)
	return err
}

// stateStore is where a repository's reconciler keeps its state: a
// ConfigMap on a cluster, a file in the state directory otherwise (nil).
func (d *Daemon) stateStore(repo string) (reconciler.StateStore, error) {
	if d.cluster == nil {
		return nil, nil
	}
	return kube.NewStateStore(d.cluster, d.cfg.Kubernetes.Namespace, repo)
}

// Leader reports this replica's identity and whether it leads; without
// leader election it always leads.
func (d *Daemon) Leader() (identity string, leading bool) {
	if d.elector == nil {
		return "", true
	}
	return d.elector.Identity(), d.elector.IsLeader()
}

// leaderOnly lets a follower answer reads (status page, API, /metrics,
// /healthz) and refuses everything that would act (rollout commands,
// webhooks) with 503 naming the leader, so a client retries or goes to
// the leader. Every answer says who leads in X-Merlin-Leader.
func (d *Daemon) leaderOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		holder := d.elector.Leader()
		w.Header().Set("X-Merlin-Leader", holder)
		if d.elector.IsLeader() || r.Method == http.MethodGet || r.Method == http.MethodHead {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(d.cfg.Kubernetes.LeaderElection.RetryPeriod.D().Seconds()))))
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"error":  fmt.Sprintf("replica %s is standing by and does not act; the leader (%s) does", d.elector.Identity(), cmp.Or(holder, "not elected yet")),
			"leader": holder,
		})
	})
}

// errStandingBy answers commands for a repository this replica does not
// reconcile (it is not the leader).
var errStandingBy = errors.New("this replica is standing by (not the leader); send commands to the leader")

// Repo, Status and Command make a repository a server.Repo that follows
// its reconciler, which a follower does not have.

// Repo is the repository's name.
func (r *repo) Repo() string { return r.cfg.Name }

// Status is the reconciler's snapshot, or an empty one while standing by.
func (r *repo) Status() reconciler.Status {
	if rec := r.rec.Load(); rec != nil {
		return rec.Status()
	}
	return reconciler.Status{Repo: r.cfg.Name, URL: r.src.URL()}
}

// Command passes a rollout command to the reconciler.
func (r *repo) Command(ctx context.Context, model string, cmd rollout.Command) (reconciler.CommandResult, error) {
	rec := r.rec.Load()
	if rec == nil {
		return reconciler.CommandResult{}, errStandingBy
	}
	return rec.Command(ctx, model, cmd)
}

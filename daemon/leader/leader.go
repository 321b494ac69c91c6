// Package leader makes one Merlin daemon among several replicas the one
// that reconciles and applies, with a coordination.k8s.io Lease (client-go's
// leaderelection with a LeaseLock).
//
// Every replica campaigns; the holder of the Lease runs the lead function,
// the others wait. The work guarded by the Lease always finishes before the
// Lease is released: when the daemon stops, lead's context ends, lead
// returns, and only then is the Lease handed back (its duration set to 1s),
// so a standby takes over within one retry period instead of waiting for
// the lease to expire. A leader that cannot renew stops leading within the
// renew deadline, before the lease expires for the others; Run then reports
// ErrLost, and the daemon exits so that it restarts as a clean follower (as
// controller-runtime managers do).
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ErrLost is returned by Run when this instance stopped holding the Lease
// while it was still meant to lead (it could not renew in time).
var ErrLost = errors.New("leader election lost")

// Config names the Lease and sets the election's timings.
type Config struct {
	// Namespace and Name locate the Lease.
	Namespace string
	Name      string
	// Identity is this instance's name in the Lease (holderIdentity);
	// unique among the candidates. See Identity.
	Identity string
	// LeaseDuration is how long others wait before taking over a lease
	// that was not renewed; RenewDeadline how long the leader keeps trying
	// to renew before it gives up; RetryPeriod how often everyone tries.
	// LeaseDuration > RenewDeadline > 1.2 × RetryPeriod.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// Elector campaigns for one Lease.
type Elector struct {
	cfg     Config
	client  kubernetes.Interface
	log     *slog.Logger
	leading atomic.Bool
	holder  atomic.Value // string: the last observed holder
}

// New returns an elector for the Lease cfg names. It checks the
// configuration; nothing is read or written before Run.
func New(client kubernetes.Interface, cfg Config, log *slog.Logger) (*Elector, error) {
	switch {
	case cfg.Namespace == "" || cfg.Name == "":
		return nil, fmt.Errorf("leader election: the Lease needs a namespace and a name (got %q/%q)", cfg.Namespace, cfg.Name)
	case cfg.Identity == "":
		return nil, errors.New("leader election: identity is empty")
	case cfg.LeaseDuration <= cfg.RenewDeadline:
		return nil, fmt.Errorf("leader election: lease duration %s must be longer than the renew deadline %s", cfg.LeaseDuration, cfg.RenewDeadline)
	case float64(cfg.RenewDeadline) <= leaderelection.JitterFactor*float64(cfg.RetryPeriod) || cfg.RetryPeriod <= 0:
		return nil, fmt.Errorf("leader election: renew deadline %s must be longer than %.1f × the retry period %s", cfg.RenewDeadline, leaderelection.JitterFactor, cfg.RetryPeriod)
	}
	if log == nil {
		log = slog.Default()
	}
	e := &Elector{cfg: cfg, client: client, log: log.With("lease", cfg.Namespace+"/"+cfg.Name, "identity", cfg.Identity)}
	e.holder.Store("")
	return e, nil
}

// IsLeader reports whether lead is running now.
func (e *Elector) IsLeader() bool { return e.leading.Load() }

// Leader is the identity of the Lease holder as last observed ("" before
// the Lease was first read or while nobody holds it).
func (e *Elector) Leader() string { return e.holder.Load().(string) }

// Identity is this instance's identity in the Lease.
func (e *Elector) Identity() string { return e.cfg.Identity }

// Run campaigns until ctx ends. While this instance holds the Lease, lead
// runs with a context that ends when ctx ends or the Lease is lost; lead
// must return promptly then. Run returns nil when ctx ended or lead
// returned by itself, after releasing the Lease if it held it, and ErrLost
// when the Lease was lost while ctx was live. An elector runs once.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	// Events outlive ctx: "stopped leading" is recorded after it ends.
	broadcaster := record.NewBroadcaster()
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: e.client.CoreV1().Events(e.cfg.Namespace)})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "merlin"})

	// The election runs on its own context so that the Lease is released
	// only after lead has returned, never while it may still apply.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	acquired := make(chan context.Context, 1)
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: e.cfg.Namespace, Name: e.cfg.Name},
			Client:     e.client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: e.cfg.Identity, EventRecorder: recorder},
		},
		Name:            e.cfg.Name,
		LeaseDuration:   e.cfg.LeaseDuration,
		RenewDeadline:   e.cfg.RenewDeadline,
		RetryPeriod:     e.cfg.RetryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(held context.Context) { acquired <- held },
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				e.holder.Store(id)
				if id != e.cfg.Identity {
					e.log.Info("following", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); elector.Run(electCtx) }()
	e.log.Info("campaigning for leadership")

	var held context.Context
	select {
	case <-ctx.Done():
		// Never led, or acquired at this very moment: lead does not run
		// and the Lease is released.
		stopElection()
		<-stopped
		return nil
	case held = <-acquired:
	}
	lost := e.lead(ctx, held, lead)
	stopElection()
	<-stopped
	if lost {
		e.log.Error("lost the Lease; stopped leading")
		return ErrLost
	}
	if err := e.ensureReleased(); err != nil {
		e.log.Warn("cannot release the Lease; a standby takes over once it expires", "err", err)
		return nil
	}
	e.log.Info("released the Lease")
	return nil
}

// ensureReleased hands the Lease back when client-go's release did not:
// its one update fails on a conflict with the last renewal, which left the
// Lease held for a whole lease duration after a clean stop. A Lease that
// another instance holds meanwhile is left alone.
func (e *Elector) ensureReleased() error {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RenewDeadline)
	defer cancel()
	leases := e.client.CoordinationV1().Leases(e.cfg.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := leases.Get(ctx, e.cfg.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != e.cfg.Identity {
			return nil
		}
		now := metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity = ptr.To("")
		l.Spec.LeaseDurationSeconds = ptr.To[int32](1)
		l.Spec.RenewTime, l.Spec.AcquireTime = &now, &now
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
}

// lead runs lead while the Lease is held and ctx is live, and reports
// whether it stopped because the Lease was lost.
func (e *Elector) lead(ctx, held context.Context, lead func(context.Context)) (lost bool) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(held, cancel)
	defer stop()
	e.log.Info("leading")
	e.leading.Store(true)
	defer e.leading.Store(false)
	lead(lctx)
	return ctx.Err() == nil && held.Err() != nil
}

// Identity returns a candidate identity for this process: the pod name
// (POD_NAME, set by the Deployment from the downward API) or the host name,
// and a random suffix, so that two processes on one host never share it.
func Identity() (string, error) {
	name := os.Getenv("POD_NAME")
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("leader identity: %w", err)
		}
		name = h
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return name + "_" + hex.EncodeToString(b), nil
}

// serviceAccountNamespace is where Kubernetes mounts the pod's namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// PodNamespace returns the namespace this process runs in: POD_NAMESPACE,
// else the service account's namespace file; "" outside a cluster.
func PodNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(serviceAccountNamespace); err == nil {
		return strings.TrimSpace(string(b))
	}
	return ""
}

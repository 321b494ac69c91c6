package leader

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"merlin.dev/merlin/internal/kubetest"
	"merlin.dev/merlin/internal/poll"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// apiServer returns a clientset for the test binary's real kube-apiserver
// and a fresh namespace for the test's Lease.
func apiServer(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	env := kubetest.Get(t)
	return kubernetes.NewForConfigOrDie(env.Config), env.Namespace(t)
}

// timings: a lease much longer than a retry period, so that a hand-over by
// release is told apart from a take-over by expiry.
func testConfig(ns, id string) Config {
	return Config{Namespace: ns, Name: "merlin-leader", Identity: id,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 250 * time.Millisecond}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// journal records what the candidates did, in order.
type journal struct {
	mu      sync.Mutex
	entries []string
	changed chan struct{}
}

func newJournal() *journal { return &journal{changed: make(chan struct{}, 100)} }

func (j *journal) add(s string) {
	j.mu.Lock()
	j.entries = append(j.entries, s)
	j.mu.Unlock()
	j.changed <- struct{}{}
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.entries)
}

// waitFor waits until the journal holds entry, for at most d.
func (j *journal) waitFor(t *testing.T, entry string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for !slices.Contains(j.list(), entry) {
		select {
		case <-j.changed:
		case <-deadline:
			t.Fatalf("no %q within %s; journal: %q", entry, d, j.list())
		}
	}
}

// candidate runs an elector whose lead journals its start and, once its
// context ends, finishes some work before it returns, like a reconciler
// completing an apply.
func candidate(t *testing.T, ctx context.Context, client kubernetes.Interface, cfg Config, j *journal) (*Elector, <-chan error) {
	t.Helper()
	e, err := New(client, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, func(ctx context.Context) {
			j.add(cfg.Identity + " leads")
			<-ctx.Done()
			time.Sleep(200 * time.Millisecond)
			j.add(cfg.Identity + " finished")
		})
	}()
	return e, done
}

func getLease(t *testing.T, client kubernetes.Interface, ns string) *coordinationv1.Lease {
	t.Helper()
	l, err := client.CoordinationV1().Leases(ns).Get(context.Background(), "merlin-leader", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestHandOver runs two instances: the second never leads while the first
// holds the Lease, and takes over within the lease duration once the first
// stops, after the first has finished its work and released the Lease.
func TestHandOver(t *testing.T) {
	client, ns := apiServer(t)
	j := newJournal()
	ctxA, stopA := context.WithCancel(context.Background())
	defer stopA()
	a, doneA := candidate(t, ctxA, client, testConfig(ns, "a"), j)
	j.waitFor(t, "a leads", 30*time.Second)
	if !a.IsLeader() {
		t.Error("a leads but IsLeader is false")
	}

	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	b, doneB := candidate(t, ctxB, client, testConfig(ns, "b"), j)
	// b has read the Lease and tried again at every renewal of a's: wait
	// until a renewed it several times after b saw it held by a.
	poll.Until(t, 30*time.Second, "b sees a lead", func() bool { return b.Leader() == "a" })
	first := getLease(t, client, ns).Spec.RenewTime.Time
	poll.Until(t, 30*time.Second, "a renews the Lease 8 times", func() bool {
		return getLease(t, client, ns).Spec.RenewTime.Sub(first) >= 8*testConfig("", "").RetryPeriod
	})
	if got := j.list(); !slices.Equal(got, []string{"a leads"}) {
		t.Fatalf("while a holds the Lease: journal %q, want only a leading", got)
	}
	if b.IsLeader() {
		t.Fatal("b claims to lead while a holds the Lease")
	}

	stopA()
	if err := <-doneA; err != nil {
		t.Fatalf("a.Run after stop = %v, want nil", err)
	}
	released := time.Now()
	// Released, not expired: b takes over well within the lease duration.
	j.waitFor(t, "b leads", testConfig("", "").LeaseDuration)
	t.Logf("b took over %s after a released the Lease (lease duration %s, retry period %s)",
		time.Since(released).Round(time.Millisecond), testConfig("", "").LeaseDuration, testConfig("", "").RetryPeriod)
	if got, want := j.list(), []string{"a leads", "a finished", "b leads"}; !slices.Equal(got, want) {
		t.Errorf("journal %q, want %q (a finishes its work before b starts)", got, want)
	}
	l := getLease(t, client, ns)
	if id := ptr.Deref(l.Spec.HolderIdentity, ""); id != "b" {
		t.Errorf("Lease holder = %q, want b", id)
	}
	if n := ptr.Deref(l.Spec.LeaseTransitions, 0); n != 1 {
		t.Errorf("Lease transitions = %d, want 1", n)
	}
	if a.IsLeader() || !b.IsLeader() {
		t.Errorf("after hand-over: a leads %v, b leads %v", a.IsLeader(), b.IsLeader())
	}
	stopB()
	if err := <-doneB; err != nil {
		t.Fatalf("b.Run after stop = %v", err)
	}
	// b released on the way out too.
	if id := ptr.Deref(getLease(t, client, ns).Spec.HolderIdentity, ""); id != "" {
		t.Errorf("after b stopped the Lease is held by %q", id)
	}
}

// TestCrashedLeader: a Lease held by a leader that vanished without
// releasing it is taken over only once it expires.
func TestCrashedLeader(t *testing.T) {
	client, ns := apiServer(t)
	cfg := testConfig(ns, "b")
	cfg.LeaseDuration, cfg.RenewDeadline = 3*time.Second, 2*time.Second
	now := metav1.NowMicro()
	_, err := client.CoordinationV1().Leases(ns).Create(context.Background(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "merlin-leader"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("crashed"), LeaseDurationSeconds: ptr.To[int32](3),
			AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	j := newJournal()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	start := time.Now()
	_, done := candidate(t, ctx, client, cfg, j)
	j.waitFor(t, "b leads", 30*time.Second)
	// A lower bound only: b must not take a lease that has not expired.
	if waited := time.Since(start); waited < cfg.LeaseDuration {
		t.Errorf("b took over after %s, before the crashed leader's lease (%s) expired", waited, cfg.LeaseDuration)
	}
	if n := ptr.Deref(getLease(t, client, ns).Spec.LeaseTransitions, 0); n != 1 {
		t.Errorf("Lease transitions = %d, want 1", n)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestLost: a leader whose Lease is taken from it stops leading within the
// renew deadline and reports ErrLost.
func TestLost(t *testing.T) {
	client, ns := apiServer(t)
	cfg := testConfig(ns, "a")
	cfg.LeaseDuration, cfg.RenewDeadline = 4*time.Second, 2*time.Second
	j := newJournal()
	_, done := candidate(t, context.Background(), client, cfg, j)
	j.waitFor(t, "a leads", 30*time.Second)

	// Someone else writes the Lease (an operator, or a partition that let
	// it expire): a can no longer renew.
	poll.Until(t, 30*time.Second, "the intruder writes the Lease", func() bool {
		l := getLease(t, client, ns)
		now := metav1.NowMicro()
		l.Spec.HolderIdentity, l.Spec.RenewTime, l.Spec.LeaseDurationSeconds = ptr.To("intruder"), &now, ptr.To[int32](3600)
		_, err := client.CoordinationV1().Leases(ns).Update(context.Background(), l, metav1.UpdateOptions{})
		return err == nil
	})
	select {
	case err := <-done:
		if !errors.Is(err, ErrLost) {
			t.Fatalf("Run = %v, want ErrLost", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a kept leading after its Lease was taken")
	}
	if got := j.list(); !slices.Equal(got, []string{"a leads", "a finished"}) {
		t.Errorf("journal %q", got)
	}
	if id := ptr.Deref(getLease(t, client, ns).Spec.HolderIdentity, ""); id != "intruder" {
		t.Errorf("a released a Lease it no longer held: holder %q", id)
	}
}

// TestStopBeforeLeading: stopping a candidate that never led returns at
// once and leaves the holder's Lease alone.
func TestStopBeforeLeading(t *testing.T) {
	client, ns := apiServer(t)
	j := newJournal()
	ctxA, stopA := context.WithCancel(context.Background())
	defer stopA()
	_, doneA := candidate(t, ctxA, client, testConfig(ns, "a"), j)
	j.waitFor(t, "a leads", 30*time.Second)
	ctxB, stopB := context.WithCancel(context.Background())
	b, doneB := candidate(t, ctxB, client, testConfig(ns, "b"), j)
	poll.Until(t, 30*time.Second, "b sees a lead", func() bool { return b.Leader() == "a" })
	stopB()
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	if id := ptr.Deref(getLease(t, client, ns).Spec.HolderIdentity, ""); id != "a" {
		t.Errorf("holder after a follower stopped = %q, want a", id)
	}
	if got := j.list(); !slices.Equal(got, []string{"a leads"}) {
		t.Errorf("journal %q", got)
	}
	stopA()
	if err := <-doneA; err != nil {
		t.Error(err)
	}
}

func TestConfigErrors(t *testing.T) {
	good := Config{Namespace: "ns", Name: "l", Identity: "me", LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
	if _, err := New(nil, good, nil); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no namespace":      func(c *Config) { c.Namespace = "" },
		"no name":           func(c *Config) { c.Name = "" },
		"no identity":       func(c *Config) { c.Identity = "" },
		"lease <= renew":    func(c *Config) { c.LeaseDuration = c.RenewDeadline },
		"renew <= retry":    func(c *Config) { c.RetryPeriod = c.RenewDeadline },
		"no retry period":   func(c *Config) { c.RetryPeriod = 0 },
		"negative deadline": func(c *Config) { c.RenewDeadline = -time.Second },
	} {
		c := good
		mutate(&c)
		if _, err := New(nil, c, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// A stopping leader whose release by client-go failed (a conflict with its
// last renewal) still hands the Lease back; one another instance holds
// meanwhile is left alone.
func TestEnsureReleased(t *testing.T) {
	client, ns := apiServer(t)
	ctx := t.Context()
	leases := client.CoordinationV1().Leases(ns)
	now := metav1.NewMicroTime(time.Now())
	for _, holder := range []string{"me", "other"} {
		cfg := testConfig(ns, "me")
		cfg.Name = "held-by-" + holder
		if _, err := leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: cfg.Name},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To[int32](15),
				AcquireTime: &now, RenewTime: &now},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e, err := New(client, cfg, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.ensureReleased(); err != nil {
			t.Fatal(err)
		}
		l, err := leases.Get(ctx, cfg.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := ptr.Deref(l.Spec.HolderIdentity, "")
		want := map[string]string{"me": "", "other": "other"}[holder]
		if got != want {
			t.Errorf("Lease held by %q after release: holder %q, want %q", holder, got, want)
		}
		if holder == "me" && ptr.Deref(l.Spec.LeaseDurationSeconds, 0) != 1 {
			t.Errorf("released Lease lasts %ds, want 1s so that a standby takes over at once", ptr.Deref(l.Spec.LeaseDurationSeconds, 0))
		}
	}
}

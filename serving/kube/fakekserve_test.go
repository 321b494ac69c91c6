package kube

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	kservev1beta1 "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// fakeKServe plays the part of KServe's controller in one namespace, which
// envtest does not run: it writes the Ready condition of every
// InferenceService, True for the current generation; False with the
// reason and message of a failed Knative revision for versions marked
// broken; False with the reason and message of a raw Deployment still
// waiting for its pods for versions held (KServe reports Ready=False while
// a predictor starts). It is the only stand-in in these tests; the API
// server, the CRDs and their validation are real.
type fakeKServe struct {
	c  client.Client
	ns string

	mu     sync.Mutex
	broken map[string]bool
	held   map[string]bool
}

func startFakeKServe(t *testing.T, c client.Client, ns string) *fakeKServe {
	f := &fakeKServe{c: c, ns: ns, broken: map[string]bool{}, held: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			f.sync(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func (f *fakeKServe) setBroken(name string, broken bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken[name] = broken
}

// setHeld keeps a version starting (Ready=False, waiting for its pods)
// until it is released.
func (f *fakeKServe) setHeld(name string, held bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[name] = held
}

func (f *fakeKServe) sync(ctx context.Context) {
	var list kservev1beta1.InferenceServiceList
	if err := f.c.List(ctx, &list, client.InNamespace(f.ns)); err != nil {
		return // the API server may be down on purpose
	}
	f.mu.Lock()
	broken, held := maps.Clone(f.broken), maps.Clone(f.held)
	f.mu.Unlock()
	for i := range list.Items {
		isvc := &list.Items[i]
		want := apis.Condition{Type: apis.ConditionReady, Status: corev1.ConditionTrue}
		switch {
		case broken[isvc.Name]:
			want = apis.Condition{Type: apis.ConditionReady, Status: corev1.ConditionFalse, Reason: "RevisionFailed",
				Message: "Revision " + isvc.Name + "-predictor-00001 failed with message: container exited: model failed to load"}
		case held[isvc.Name]:
			want = apis.Condition{Type: apis.ConditionReady, Status: corev1.ConditionFalse, Reason: "MinimumReplicasUnavailable",
				Message: "Deployment does not have minimum availability."}
		}
		cur := isvc.Status.GetCondition(apis.ConditionReady)
		if cur != nil && cur.Status == want.Status && cur.Message == want.Message && isvc.Status.ObservedGeneration == isvc.Generation {
			continue
		}
		want.LastTransitionTime = apis.VolatileTime{Inner: metav1.Now()}
		isvc.Status.Conditions = []apis.Condition{want}
		isvc.Status.ObservedGeneration = isvc.Generation
		_ = f.c.Status().Update(ctx, isvc)
	}
}

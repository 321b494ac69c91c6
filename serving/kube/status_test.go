package kube

import (
	"maps"
	"slices"
	"testing"
	"time"

	kservev1beta1 "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	istioapi "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"

	"merlin.dev/merlin/serving"
)

// TestReadiness pins how KServe's status maps to a version's state, and
// that a version KServe gave up on looks failed to the reconciler
// (Degraded, not Progressing) while one that is still starting does not.
func TestReadiness(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	changed := created.Add(time.Minute)
	isvc := func(gen, observed int64, ready *apis.Condition, ms kservev1beta1.ModelStatus) *kservev1beta1.InferenceService {
		i := &kservev1beta1.InferenceService{ObjectMeta: metav1.ObjectMeta{Name: "iris-1", Generation: gen, CreationTimestamp: metav1.NewTime(created)}}
		i.Status.ObservedGeneration = observed
		if ready != nil {
			ready.Type = apis.ConditionReady
			ready.LastTransitionTime = apis.VolatileTime{Inner: metav1.NewTime(changed)}
			i.Status.Conditions = []apis.Condition{*ready}
		}
		i.Status.ModelStatus = ms
		return i
	}
	cond := func(s corev1.ConditionStatus, reason, msg string) *apis.Condition {
		return &apis.Condition{Status: s, Reason: reason, Message: msg}
	}
	none := kservev1beta1.ModelStatus{}
	for _, c := range []struct {
		name   string
		isvc   *kservev1beta1.InferenceService
		state  serving.State
		reason serving.Reason
		msg    string
		failed bool
	}{
		{"not reported yet", isvc(1, 0, nil, none), serving.StateStarting, serving.ReasonWaiting, "KServe has not reported readiness yet", false},
		{"ready", isvc(1, 1, cond(corev1.ConditionTrue, "", ""), none), serving.StateReady, serving.ReasonAvailable, "", false},
		{"ready for an older generation", isvc(2, 1, cond(corev1.ConditionTrue, "", ""), none), serving.StateStarting, serving.ReasonStarting,
			"waiting for KServe to observe generation 2", false},
		{"unknown", isvc(1, 1, cond(corev1.ConditionUnknown, "RevisionMissing", "Configuration is waiting for a Revision to become ready."), none),
			serving.StateStarting, serving.ReasonStarting, "Configuration is waiting for a Revision to become ready.", false},
		{"false while pods start", isvc(1, 1, cond(corev1.ConditionFalse, "MinimumReplicasUnavailable", "Deployment does not have minimum availability."), none),
			serving.StateStarting, serving.ReasonStarting, "Deployment does not have minimum availability.", false},
		{"revision failed", isvc(1, 1, cond(corev1.ConditionFalse, "RevisionFailed", "Revision iris-1-predictor-00001 failed with message: exit 1"), none),
			serving.StateFailed, serving.ReasonCrashLoop, "Revision iris-1-predictor-00001 failed with message: exit 1", true},
		{"progress deadline", isvc(1, 1, cond(corev1.ConditionFalse, "ProgressDeadlineExceeded", `ReplicaSet "iris-1-predictor-5d9" has timed out progressing.`), none),
			serving.StateFailed, serving.ReasonCrashLoop, `ReplicaSet "iris-1-predictor-5d9" has timed out progressing.`, true},
		{"model failed to load", isvc(1, 1, cond(corev1.ConditionFalse, "MinimumReplicasUnavailable", "Deployment does not have minimum availability."),
			kservev1beta1.ModelStatus{TransitionStatus: kservev1beta1.BlockedByFailedLoad,
				LastFailureInfo: &kservev1beta1.FailureInfo{Reason: kservev1beta1.ModelLoadFailed, Message: "pickle: unsupported protocol"}}),
			serving.StateFailed, serving.ReasonCrashLoop, "pickle: unsupported protocol", true},
		{"no runtime", isvc(1, 1, cond(corev1.ConditionFalse, "", ""),
			kservev1beta1.ModelStatus{TransitionStatus: kservev1beta1.BlockedByFailedLoad,
				LastFailureInfo: &kservev1beta1.FailureInfo{Reason: kservev1beta1.NoSupportingRuntime, Message: "no runtime supports sklearn v9"}}),
			serving.StateFailed, serving.ReasonCannotRun, "no runtime supports sklearn v9", true},
		{"invalid spec", isvc(1, 1, nil, kservev1beta1.ModelStatus{TransitionStatus: kservev1beta1.InvalidSpec}),
			serving.StateFailed, serving.ReasonCannotRun, "KServe could not load the model", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := readiness(c.isvc)
			if st.State != c.state || st.Reason != c.reason || st.Message != c.msg {
				t.Errorf("readiness = %s %s %q, want %s %s %q", st.State, st.Reason, st.Message, c.state, c.reason, c.msg)
			}
			v := serving.VersionStatus{Conditions: serving.VersionConditions(nil, st.State, st.Reason, st.Message, st.Since)}
			if v.Failed() != c.failed || v.Ready() != (c.state == serving.StateReady) {
				t.Errorf("conditions %+v: failed %v ready %v", v.Conditions, v.Failed(), v.Ready())
			}
			since := created // before KServe writes a Ready condition
			if len(c.isvc.Status.Conditions) > 0 {
				since = changed
			}
			if !st.Since.Equal(since) {
				t.Errorf("since %s, want %s", st.Since, since)
			}
		})
	}
}

// TestPlan: traffic follows serving.Route; a mirror is added once its
// version is ready and, once routed, stays while it is desired.
func TestPlan(t *testing.T) {
	ready := map[string]bool{"v0": true, "v1": false, "v2": false, "v3": true}
	isReady := func(id string) bool { return ready[id] }
	d := serving.Deployment{
		Model: "iris", Traffic: map[string]int{"v0": 90, "v1": 10},
		Mirrors: []serving.Mirror{{Version: "v2", Percent: 20}, {Version: "v3", Percent: 50}, {Version: "v4", Percent: 0}},
	}
	for _, id := range []string{"v0", "v1", "v2", "v3", "v4"} {
		d.Versions = append(d.Versions, serving.Version{ID: id, Model: "iris"})
	}

	// First deployment: nothing to protect, the split is routed at once;
	// the mirror of a version that is not ready waits.
	r, next := plan(d, route{}, isReady)
	if !maps.Equal(next.Traffic, d.Traffic) || !r.Converged() {
		t.Errorf("first plan: traffic %v waiting %v, want %v", next.Traffic, r.Waiting, d.Traffic)
	}
	if want := []serving.Mirror{{Version: "v3", Percent: 50}}; !slices.Equal(next.Mirrors, want) {
		t.Errorf("first plan: mirrors %v, want %v", next.Mirrors, want)
	}

	// A canary towards a version that is not ready keeps the split; a
	// mirror routed already stays (with the desired share) though its
	// version is not ready.
	cur := route{Traffic: map[string]int{"v0": 100}, Mirrors: []serving.Mirror{{Version: "v2", Percent: 5}}}
	r, next = plan(d, cur, isReady)
	if !maps.Equal(next.Traffic, cur.Traffic) || !slices.Equal(r.Waiting, []string{"v1"}) {
		t.Errorf("canary plan: traffic %v waiting %v, want the current split, waiting for v1", next.Traffic, r.Waiting)
	}
	if want := []serving.Mirror{{Version: "v2", Percent: 20}, {Version: "v3", Percent: 50}}; !slices.Equal(next.Mirrors, want) {
		t.Errorf("canary plan: mirrors %v, want %v", next.Mirrors, want)
	}

	ready["v1"] = true
	_, next = plan(d, cur, isReady)
	if !maps.Equal(next.Traffic, d.Traffic) {
		t.Errorf("once v1 is ready: traffic %v, want %v", next.Traffic, d.Traffic)
	}
	if next.equal(route{Traffic: cur.Traffic, Mirrors: next.Mirrors}) {
		t.Error("equal ignores the traffic")
	}
}

// TestRouteOf reads weights and mirrors back from a VirtualService,
// including the single mirror of VirtualServices written by an older
// merlin and a mirror without a percentage (Istio mirrors everything).
func TestRouteOf(t *testing.T) {
	host := func(id string) *istioapi.Destination { return &istioapi.Destination{Host: PredictorHost(id, "models")} }
	vs := &istionetworkingv1.VirtualService{}
	vs.Spec.Http = []*istioapi.HTTPRoute{{
		Route: []*istioapi.HTTPRouteDestination{
			{Destination: host("iris-aaaaaaaa"), Weight: 90},
			{Destination: host("iris-bbbbbbbb"), Weight: 10},
			{Destination: host("iris-cccccccc"), Weight: 0},
		},
		Mirrors: []*istioapi.HTTPMirrorPolicy{
			{Destination: host("iris-dddddddd"), Percentage: &istioapi.Percent{Value: 20}},
			{Destination: host("iris-eeeeeeee")},
			{Destination: host("iris-ffffffff"), Percentage: &istioapi.Percent{Value: 0}},
		},
		Mirror:           host("iris-99999999"),
		MirrorPercentage: &istioapi.Percent{Value: 7.6},
	}}
	r := routeOf(vs)
	if want := map[string]int{"iris-aaaaaaaa": 90, "iris-bbbbbbbb": 10}; !maps.Equal(r.Traffic, want) {
		t.Errorf("traffic %v, want %v", r.Traffic, want)
	}
	want := []serving.Mirror{{Version: "iris-dddddddd", Percent: 20}, {Version: "iris-eeeeeeee", Percent: 100}, {Version: "iris-99999999", Percent: 8}}
	if !slices.Equal(r.Mirrors, want) {
		t.Errorf("mirrors %v, want %v", r.Mirrors, want)
	}
}

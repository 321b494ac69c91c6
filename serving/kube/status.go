package kube

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	kservev1beta1 "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	istioapi "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"merlin.dev/merlin/serving"
)

// route is what a model's VirtualService routes: the client split
// (versions with a share above zero) and the mirrors (with a share above
// zero), in order.
type route struct {
	Traffic map[string]int
	Mirrors []serving.Mirror
}

func (r route) equal(o route) bool {
	return maps.Equal(r.Traffic, o.Traffic) && slices.Equal(r.Mirrors, o.Mirrors)
}

// plan decides what deployment d's VirtualService routes now, given what
// it routes (current) and which versions are ready. The client split is
// serving.Route's. A mirror is routed once its version is ready, like
// traffic: before that its predictor may not even have a Service, and
// Istio would copy requests to a host that does not exist. A mirror that
// is routed already stays while d lists it (with d's share), even if its
// version stops being ready, as traffic does: routing follows readiness
// into a version, never out of it, so the VirtualService does not flap.
func plan(d serving.Deployment, current route, ready func(version string) bool) (serving.Routing, route) {
	var cur map[string]int
	if len(current.Traffic) > 0 {
		cur = current.Traffic
	}
	r := serving.Route(d, cur, ready)
	next := route{Traffic: map[string]int{}}
	for id, w := range r.Traffic {
		if w > 0 {
			next.Traffic[id] = w
		}
	}
	for _, m := range d.Mirrors {
		mirrored := slices.ContainsFunc(current.Mirrors, func(c serving.Mirror) bool { return c.Version == m.Version })
		if m.Percent > 0 && (mirrored || ready(m.Version)) {
			next.Mirrors = append(next.Mirrors, m)
		}
	}
	return r, next
}

// routeOf reads a VirtualService back: the weights of its destinations and
// its mirrors, from Istio's mirrors list and, for VirtualServices written
// before it, the single mirror and mirrorPercentage.
func routeOf(vs *istionetworkingv1.VirtualService) route {
	r := route{Traffic: map[string]int{}}
	mirror := func(host string, pct *istioapi.Percent) {
		m := serving.Mirror{Version: versionOf(host), Percent: 100} // Istio mirrors everything when no percentage is set
		if pct != nil {
			m.Percent = int(math.Round(pct.GetValue()))
		}
		if m.Percent > 0 && !slices.ContainsFunc(r.Mirrors, func(o serving.Mirror) bool { return o.Version == m.Version }) {
			r.Mirrors = append(r.Mirrors, m)
		}
	}
	for _, h := range vs.Spec.Http {
		for _, dst := range h.Route {
			if dst.Destination != nil && dst.Weight > 0 {
				r.Traffic[versionOf(dst.Destination.Host)] += int(dst.Weight)
			}
		}
		for _, m := range h.Mirrors {
			if m.Destination != nil {
				mirror(m.Destination.Host, m.Percentage)
			}
		}
		if h.Mirror != nil {
			mirror(h.Mirror.Host, h.MirrorPercentage)
		}
	}
	return r
}

// versionOf reads the version ID back from a predictor host.
func versionOf(host string) string {
	id, _, _ := strings.Cut(host, ".")
	return strings.TrimSuffix(id, "-predictor")
}

// versionState is what an InferenceService says about its version.
type versionState struct {
	State   serving.State
	Reason  serving.Reason
	Message string
	Since   time.Time
}

// servable is serving.Route's view of the version: it answers requests.
func (s versionState) servable() bool {
	return s.State == serving.StateReady || s.State == serving.StateIdle
}

// Ready=False reasons with which KServe passes on that the predictor's
// workload gave up: Knative marks a revision failed once its container
// exits or cannot be pulled, or its progress deadline passes; a raw
// Deployment reports ProgressDeadlineExceeded. Nothing but a new spec
// fixes them, and a version's spec never changes.
var gaveUp = map[string]bool{"RevisionFailed": true, "ProgressDeadlineExceeded": true}

// readiness maps an InferenceService's status to its version's state:
//
//   - Ready=True for the current generation: ready.
//   - A status written for an older generation of the spec, no Ready
//     condition yet, or Ready=Unknown: starting.
//   - KServe's model status reporting a failed load (transitionStatus
//     BlockedByFailedLoad or InvalidSpec, or the target model state
//     FailedToLoad): failed, CannotRun when the runtime or the spec is at
//     fault (no runtime supports the model, the runtime is unknown or
//     disabled, the predictor spec is invalid), else CrashLoop.
//   - Ready=False with a reason in gaveUp (RevisionFailed,
//     ProgressDeadlineExceeded): failed, CrashLoop.
//   - Any other Ready=False: starting. KServe reports Ready=False while
//     pods are scheduled, pulled and loaded (MinimumReplicasUnavailable,
//     RevisionMissing, …); a workload that never becomes ready ends in one
//     of the cases above once its progress deadline passes.
//
// A failed version is thus Degraded and no longer Progressing (see
// serving.VersionConditions): the reconciler rolls it back. The message is
// KServe's. Since is when the Ready condition last changed (the creation
// time before there is one).
func readiness(isvc *kservev1beta1.InferenceService) versionState {
	c := isvc.Status.GetCondition(apis.ConditionReady)
	st := versionState{Since: isvc.CreationTimestamp.Time}
	if c != nil && !c.LastTransitionTime.Inner.IsZero() {
		st.Since = c.LastTransitionTime.Inner.Time
	}
	if og := isvc.Status.ObservedGeneration; og != 0 && og < isvc.Generation {
		st.State, st.Reason = serving.StateStarting, serving.ReasonStarting
		st.Message = fmt.Sprintf("waiting for KServe to observe generation %d", isvc.Generation)
		return st
	}
	if c != nil && c.Status == corev1.ConditionTrue {
		st.State, st.Reason = serving.StateReady, serving.ReasonAvailable
		return st
	}
	if reason, msg, failed := loadFailure(isvc.Status.ModelStatus); failed {
		st.State, st.Reason = serving.StateFailed, reason
		st.Message = cmp.Or(msg, conditionMessage(c), "KServe could not load the model")
		return st
	}
	switch {
	case c == nil:
		st.State, st.Reason, st.Message = serving.StateStarting, serving.ReasonWaiting, "KServe has not reported readiness yet"
	case c.Status == corev1.ConditionFalse && gaveUp[c.Reason]:
		st.State, st.Reason, st.Message = serving.StateFailed, serving.ReasonCrashLoop, conditionMessage(c)
	default:
		st.State, st.Reason, st.Message = serving.StateStarting, serving.ReasonStarting, conditionMessage(c)
	}
	return st
}

func conditionMessage(c *apis.Condition) string {
	if c == nil {
		return ""
	}
	return cmp.Or(c.Message, c.Reason)
}

// loadFailure reads KServe's model status: whether the target model failed
// to load, and whether a restart could fix it.
func loadFailure(ms kservev1beta1.ModelStatus) (serving.Reason, string, bool) {
	failed := ms.TransitionStatus == kservev1beta1.BlockedByFailedLoad || ms.TransitionStatus == kservev1beta1.InvalidSpec ||
		(ms.ModelRevisionStates != nil && ms.ModelRevisionStates.TargetModelState == kservev1beta1.FailedToLoad)
	if !failed {
		return "", "", false
	}
	reason, msg := serving.ReasonCrashLoop, ""
	if ms.TransitionStatus == kservev1beta1.InvalidSpec {
		reason = serving.ReasonCannotRun
	}
	if f := ms.LastFailureInfo; f != nil {
		switch f.Reason {
		case kservev1beta1.NoSupportingRuntime, kservev1beta1.RuntimeNotRecognized, kservev1beta1.RuntimeDisabled, kservev1beta1.InvalidPredictorSpec:
			reason = serving.ReasonCannotRun
		}
		msg = cmp.Or(f.Message, string(f.Reason))
	}
	return reason, msg, true
}

// Status implements serving.Target from the cluster: every model with
// InferenceServices or a VirtualService labelled as merlin's, so a
// restarted daemon sees what its predecessor deployed. Weights and mirrors
// are what the VirtualService routes. A model this process applied gets
// its conditions from serving.Route over its desired deployment (Ready is
// False while a version gaining traffic is not ready); another from its
// VirtualService alone.
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
	objs := map[string]*modelObjects{}
	get := func(model string) *modelObjects {
		if objs[model] == nil {
			objs[model] = &modelObjects{}
		}
		return objs[model]
	}
	for _, vs := range vss.Items {
		get(vs.Labels[LabelModel]).route = routeOf(vs)
	}
	for i := range isvcs.Items {
		isvc := &isvcs.Items[i]
		get(isvc.Labels[LabelModel]).versions = append(get(isvc.Labels[LabelModel]).versions, isvc)
	}

	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]serving.ModelStatus, 0, len(objs))
	vconds := map[string][]serving.Condition{}
	for _, model := range slices.Sorted(maps.Keys(objs)) {
		var d *serving.Deployment
		if dd, ok := k.deployments[model]; ok {
			d = &dd
		}
		ms := modelStatus(model, objs[model], d, k.cfg.Namespace, k.conds[model], k.vconds, now)
		for _, v := range ms.Versions {
			vconds[v.Version] = v.Conditions
		}
		k.conds[model] = ms.Conditions
		ms.Conditions = slices.Clone(ms.Conditions)
		out = append(out, ms)
	}
	k.vconds = vconds
	for model := range k.conds {
		if objs[model] == nil {
			delete(k.conds, model)
		}
	}
	return out, nil
}

// modelObjects are what the cluster holds of one model.
type modelObjects struct {
	versions []*kservev1beta1.InferenceService
	route    route
}

// modelStatus builds one model's status from its objects. d is its
// desired deployment when this process applied it; prev and prevVersions
// are the conditions last reported, whose transition times stay while a
// status does not change.
func modelStatus(model string, o *modelObjects, d *serving.Deployment, namespace string, prev []serving.Condition,
	prevVersions map[string][]serving.Condition, now time.Time) serving.ModelStatus {
	ms := serving.ModelStatus{Name: model, Mirrors: slices.Clone(o.route.Mirrors)}
	if len(ms.Mirrors) > 0 {
		ms.Mirror = &ms.Mirrors[0]
	}
	states := map[string]versionState{}
	for _, isvc := range o.versions {
		st := readiness(isvc)
		states[isvc.Name] = st
		// A change seen now happened about now; on first sight, KServe's
		// transition time is the best estimate.
		at := now
		if prevVersions[isvc.Name] == nil && !st.Since.IsZero() {
			at = st.Since
		}
		vs := serving.VersionStatus{
			Version: isvc.Name, Weight: o.route.Traffic[isvc.Name], State: st.State,
			Endpoint: PredictorHost(isvc.Name, namespace), Since: st.Since,
			Conditions: serving.VersionConditions(prevVersions[isvc.Name], st.State, st.Reason, st.Message, at),
		}
		if st.State != serving.StateReady {
			vs.LastError = st.Message
		}
		ms.Versions = append(ms.Versions, vs)
	}
	slices.SortFunc(ms.Versions, func(a, b serving.VersionStatus) int { return cmp.Compare(a.Version, b.Version) })

	var r serving.Routing
	if d != nil {
		r, _ = plan(*d, o.route, func(id string) bool { return states[id].servable() })
		// The weights are what the VirtualService routes, which the loop
		// brings to the planned split within a poll interval.
		r.Traffic = o.route.Traffic
	} else {
		// Without the desired deployment (a restarted daemon before its
		// first Apply), what is routed is all there is to judge.
		r = serving.Routing{Traffic: o.route.Traffic, Keep: slices.Sorted(maps.Keys(states))}
	}
	ms.Conditions = serving.ModelConditions(prev, r, ms.Versions, now)
	return ms
}

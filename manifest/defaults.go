package manifest

import "time"

// Default values applied to fields the manifest leaves out. `merlin render`
// shows them.
var (
	DefaultSteps         = []int{10, 50, 100}
	DefaultInterval      = Duration(30 * time.Second)
	DefaultMinRequests   = 50
	DefaultMaxErrorRate  = Percent(1)
	DefaultLatencyRatio  = 1.5
	DefaultFailureLimit  = 2
	DefaultMirrorPercent = 100
	DefaultDeadline      = Duration(10 * time.Minute)
)

// applyDefaults fills in the fields the manifest did not set. It only
// touches unset fields, so validation still sees every value the user
// wrote (replicas.min: 0 stays 0).
func applyDefaults(m *Model) {
	s := &m.Spec
	if !m.Set("spec.protocol") {
		s.Protocol = ProtocolV1
	}
	if !m.Set("spec.replicas.min") {
		s.Replicas.Min = 1
	}
	if !m.Set("spec.replicas.max") {
		s.Replicas.Max = max(1, s.Replicas.Min)
	}
	r := &s.Rollout
	if !m.Set("spec.rollout.strategy") {
		r.Strategy = StrategyCanary
	}
	if r.Strategy == StrategyCanary && !m.Set("spec.rollout.steps") {
		r.Steps = append([]int(nil), DefaultSteps...)
	}
	if r.Strategy.Mirrored() && !m.Set("spec.rollout.mirrorPercent") {
		r.MirrorPercent = DefaultMirrorPercent
	}
	if !m.Set("spec.rollout.progressDeadline") {
		r.ProgressDeadline = DefaultDeadline
	}
	if r.Strategy != StrategyDirect {
		applyAnalysisDefaults(m)
	}
	if !m.Set("spec.preview.enabled") {
		s.Preview.Enabled = true
	}
	if !m.Set("spec.preview.mirrorPercent") {
		s.Preview.MirrorPercent = DefaultMirrorPercent
	}
}

func applyAnalysisDefaults(m *Model) {
	r := &m.Spec.Rollout
	if !m.Set("spec.rollout.interval") {
		r.Interval = DefaultInterval
	}
	if !m.Set("spec.rollout.promotion") {
		r.Promotion = PromotionAuto
	}
	if r.Analysis == nil {
		r.Analysis = &Analysis{}
	}
	a := r.Analysis
	if !m.Set("spec.rollout.analysis.minRequests") {
		a.MinRequests = DefaultMinRequests
	}
	if !m.Set("spec.rollout.analysis.maxErrorRate") {
		a.MaxErrorRate = DefaultMaxErrorRate
	}
	if !m.Set("spec.rollout.analysis.maxLatencyRatio") {
		a.MaxLatencyRatio = DefaultLatencyRatio
	}
	if !m.Set("spec.rollout.analysis.failureLimit") {
		a.FailureLimit = DefaultFailureLimit
	}
}

package manifest

// CheckComparison returns a positioned error when the model's rollout is
// judged on prediction agreement (analysis.minAgreement) but the target
// does not compare predictions (the kubernetes target, until comparison
// exists on clusters). Without it such a rollout would hold forever,
// waiting for an agreement figure that never comes.
func (m *Model) CheckComparison(target string, compares bool) *Error {
	if a := m.Spec.Rollout.Analysis; compares || a == nil || a.MinAgreement == 0 { // a direct rollout has no analysis
		return nil
	}
	return m.Errorf("spec.rollout.analysis.minAgreement",
		"the %s target does not compare predictions, so minAgreement can never be judged; remove it (error rate and latency still gate the rollout) or serve on the local target", target)
}

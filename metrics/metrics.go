// Package metrics measures model versions for rollout analysis.
//
// The router records every request into per-version Stats (lock-free
// counters and a fine-grained latency histogram) held by a Registry, which
// is also the Prometheus collector behind /metrics. A Provider answers the
// rollout engine's one question — how did the candidate and the stable
// version do since the window began — either from those in-process
// counters (Local) or from a Prometheus server (package metrics/prom).
package metrics

import (
	"context"
	"time"
)

// Query asks for one model's candidate and stable metrics over a window.
type Query struct {
	Model     string
	Candidate string
	Stable    string
	// Since is when the window began (a rollout step's start).
	Since time.Time
}

// Window holds what the candidate and the stable version did during a
// window: the counts accumulated between its start and now.
type Window struct {
	// Start is when the counts began; it can be later than Query.Since,
	// e.g. when the daemon restarted during the window.
	Start     time.Time
	End       time.Time
	Candidate Snapshot
	Stable    Snapshot
}

// Duration is how long the window has been measured.
func (w Window) Duration() time.Duration { return w.End.Sub(w.Start) }

// Provider measures versions.
type Provider interface {
	// Window returns the candidate's and the stable version's metrics
	// since q.Since.
	Window(ctx context.Context, q Query) (Window, error)
}

// Forgetter is a Provider that keeps per-version state (the local
// provider's baselines) and can drop a version that no longer runs.
type Forgetter interface {
	Forget(version string)
}

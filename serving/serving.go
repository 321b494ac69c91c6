// Package serving defines what the reconciler asks of a place that serves
// models, and the types both sides and the API speak. Implementations live
// in subpackages: serving/local runs model-server processes on this machine
// behind Merlin's own router; serving/kube applies KServe InferenceServices
// and Istio VirtualServices; servingtest.Memory keeps everything in memory
// for tests. All three pass the same contract suite (serving/servingtest).
//
// The contract is level-triggered, like a Kubernetes object and its
// controller: the reconciler states the whole desired deployment of a
// model with Apply, which records it, starts what is missing and returns
// at once. The target converges on its own; readiness, progress and
// failure are observed through Status as conditions (Ready, Progressing,
// Degraded), never waited for inside Apply. A rollout step is just another
// Apply with other weights.
//
// One rule protects clients: traffic never moves to a version that is not
// ready. It is decided in one place, Route, which every implementation
// calls whenever the desired deployment or a version's readiness changes.
package serving

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"merlin.dev/merlin/manifest"
)

// Target serves models.
type Target interface {
	// Apply records d as the desired state of its model and starts the
	// versions that are missing. It returns without waiting for them:
	// traffic follows as Route allows, and Status shows the progress. An
	// error means d was not recorded (it is invalid, or the backend
	// refused it); what served before keeps serving.
	Apply(ctx context.Context, d Deployment) error
	// Delete stops every version of a model and removes its endpoint.
	Delete(ctx context.Context, model string) error
	// Status reports what runs now, for every model the target knows,
	// including deployments restored from a previous run. Only the
	// fields a target observes are set: Name, Versions (without Role),
	// Mirrors and Conditions.
	Status(ctx context.Context) ([]ModelStatus, error)
}

// Notifier is a Target that signals when something it serves changes (a
// version became ready or failed), so that the reconciler can act at once
// instead of on its next tick. Signals are coalesced.
type Notifier interface {
	Changes() <-chan struct{}
}

// Comparer is a Target that compares predictions: it honours
// Deployment.Compare, compares every mirrored answer with the served one,
// and reports agreement in VersionStatus.Comparison. A target without it
// cannot judge a rollout by prediction agreement (minAgreement).
type Comparer interface {
	Target
	// ComparesPredictions marks the capability; it does nothing.
	ComparesPredictions()
}

// Deployment is the desired state of one model.
type Deployment struct {
	Model    string
	Versions []Version
	// Traffic maps version IDs to their share of client requests, in
	// percent; the shares add up to 100.
	Traffic map[string]int
	// Mirrors copy a share of client requests each to a version whose
	// responses never reach clients (a shadow: a shadow rollout's
	// candidate, a pull request's preview); their predictions are
	// compared with the served ones. Several may run at once.
	Mirrors []Mirror
	// Compare, when set, also sends a sample of one version's requests to
	// another in the background and compares their predictions (a canary
	// checked against the stable version).
	Compare *Compare
}

// Mirror sends a share of a model's requests to a shadow version.
type Mirror struct {
	Version string `json:"version"`
	Percent int    `json:"percent"`
}

// Compare samples a version's requests to check them against a baseline.
type Compare struct {
	Version  string `json:"version"`  // the version whose requests are sampled (the canary)
	Baseline string `json:"baseline"` // the version asked for the reference prediction (stable)
	Percent  int    `json:"percent"`
}

// Version is one servable build of a model: its ID is the model name and
// the first 8 hex digits of the content digest.
type Version struct {
	ID       string
	Model    string
	Digest   string // sha256 of the model files and serving settings, hex
	Type     manifest.ModelType
	Protocol manifest.Protocol
	// Bundle is the model directory on this machine (local target).
	Bundle string
	// StorageURI is where a cluster fetches the model (kubernetes target).
	StorageURI string
	// Image serves custom or built models.
	Image     string
	Env       []manifest.EnvVar
	Resources manifest.Resources
	Replicas  manifest.Replicas
	// Labels and Annotations are copied to deployed objects.
	Labels      map[string]string
	Annotations map[string]string
}

// VersionID names a version of a model: <model>-<first 8 hex of digest>.
func VersionID(model, digest string) string {
	if len(digest) > 8 {
		digest = digest[:8]
	}
	return model + "-" + digest
}

// Clone returns a copy of d that shares nothing mutable with it, for a
// target to keep as the desired state while the caller reuses d.
func (d Deployment) Clone() Deployment {
	d.Versions = slices.Clone(d.Versions)
	d.Traffic = maps.Clone(d.Traffic)
	d.Mirrors = slices.Clone(d.Mirrors)
	if d.Compare != nil {
		c := *d.Compare
		d.Compare = &c
	}
	return d
}

// Validate checks a deployment's internal consistency: traffic, mirrors and
// comparison name listed versions and the shares add up to 100.
func (d Deployment) Validate() error {
	listed := map[string]bool{}
	for _, v := range d.Versions {
		if v.Model != d.Model {
			return fmt.Errorf("deployment of %s lists version %s of model %s", d.Model, v.ID, v.Model)
		}
		listed[v.ID] = true
	}
	total := 0
	for id, w := range d.Traffic {
		if !listed[id] {
			return fmt.Errorf("deployment of %s routes traffic to unlisted version %s", d.Model, id)
		}
		if w < 0 || w > 100 {
			return fmt.Errorf("deployment of %s gives %s a weight of %d", d.Model, id, w)
		}
		total += w
	}
	if len(d.Versions) > 0 && total != 100 {
		return fmt.Errorf("deployment of %s: traffic adds up to %d%%, not 100%%", d.Model, total)
	}
	seen := map[string]bool{}
	for _, m := range d.Mirrors {
		if !listed[m.Version] || m.Percent < 0 || m.Percent > 100 || seen[m.Version] {
			return fmt.Errorf("deployment of %s: invalid mirror %+v", d.Model, m)
		}
		seen[m.Version] = true
	}
	if c := d.Compare; c != nil && (!listed[c.Version] || !listed[c.Baseline] || c.Percent < 0 || c.Percent > 100) {
		return fmt.Errorf("deployment of %s: invalid comparison %+v", d.Model, *c)
	}
	return nil
}

// Routing is what a target routes now for a model: the traffic that may
// flow given which versions are ready, and the versions it must keep
// running.
type Routing struct {
	// Traffic is the split to route now: the desired one once every version
	// gaining traffic is ready, else the current one.
	Traffic map[string]int
	// Keep lists the versions that must run: the desired ones and those the
	// routed split still sends traffic to. Everything else may stop.
	Keep []string
	// Waiting lists desired versions that gain traffic but are not ready:
	// the reason the desired split is not routed yet.
	Waiting []string
}

// Converged reports whether the desired split is routed.
func (r Routing) Converged() bool { return len(r.Waiting) == 0 }

// Route decides what may be routed for deployment d. current is the split
// routed now (nil when the model serves nothing yet); ready reports
// whether a version answers requests (a version scaled to zero that starts
// on demand counts as ready).
//
// This is the one place that enforces "traffic never moves to a version
// that is not ready": a version gains traffic only once it is ready; until
// then the current split stays and its versions keep running. A model
// that serves nothing yet has nothing to protect: the desired split is
// routed at once, so that its first version serves as soon as it starts.
func Route(d Deployment, current map[string]int, ready func(version string) bool) Routing {
	r := Routing{Traffic: d.Traffic}
	if len(current) > 0 {
		for _, v := range d.Versions {
			if w := d.Traffic[v.ID]; w > current[v.ID] && !ready(v.ID) {
				r.Waiting = append(r.Waiting, v.ID)
			}
		}
	}
	if len(r.Waiting) > 0 {
		r.Traffic = current
	}
	r.Traffic = maps.Clone(r.Traffic)
	for _, v := range d.Versions {
		r.Keep = append(r.Keep, v.ID)
	}
	for _, id := range slices.Sorted(maps.Keys(r.Traffic)) {
		if r.Traffic[id] > 0 && !slices.Contains(r.Keep, id) {
			r.Keep = append(r.Keep, id)
		}
	}
	return r
}

// State is the lifecycle stage of a version on a target. Conditions say
// more; State is the one-word summary the API and the status page show.
type State string

// Version states.
const (
	StateStarting State = "starting" // launched, not ready yet
	StateReady    State = "ready"    // answering requests
	StateIdle     State = "idle"     // scaled to zero; starts on the next request
	StateFailed   State = "failed"   // crashed or could not start; see the conditions
	StateStopping State = "stopping" // draining before it stops
	// StatePending: the reconciler refers to the version but the target
	// does not report it (yet).
	StatePending State = "pending"
)

// Role is what a version is for in its model's rollout; the reconciler
// sets it.
type Role string

// Roles.
const (
	RoleStable    Role = "stable"
	RoleCandidate Role = "candidate"
	RolePrevious  Role = "previous"
	// RolePreview is a pull request's version, mirrored beside production.
	RolePreview Role = "preview"
)

// VersionStatus is the observed state of one version.
type VersionStatus struct {
	Version string `json:"version"`
	Role    Role   `json:"role,omitempty"`
	// PR is the pull request a preview shows.
	PR int `json:"pr,omitempty"`
	// Weight is the share of client traffic routed to the version now.
	Weight int   `json:"weight"`
	State  State `json:"state"`
	// Endpoint is the model server's own address (host:port locally, the
	// predictor host on a cluster).
	Endpoint  string    `json:"endpoint,omitempty"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"lastError,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	// Comparison counts how the version's predictions compared with the
	// served ones (mirrors, compared canaries), on targets that compare.
	Comparison *Comparison `json:"comparison,omitempty"`
	Conditions []Condition `json:"conditions,omitempty"`
}

// Comparison counts prediction comparisons of one version.
type Comparison struct {
	Requests  uint64  `json:"requests"`
	Agree     uint64  `json:"agree"`
	Disagree  uint64  `json:"disagree"`
	Failed    uint64  `json:"failed"`
	Agreement float64 `json:"agreement"` // agree / (agree + disagree), 0–1; 0 when nothing compared
}

// Failed reports that the target gave up on the version: it is Degraded
// and no longer Progressing (it crash-loops, or cannot run at all).
func (v VersionStatus) Failed() bool {
	return IsTrue(v.Conditions, Degraded) && !IsTrue(v.Conditions, Progressing)
}

// Ready reports that the version answers requests (or starts on demand).
func (v VersionStatus) Ready() bool { return IsTrue(v.Conditions, Ready) }

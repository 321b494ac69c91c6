// Package serving defines what the reconciler asks of a place that serves
// models, and the types both sides speak. Implementations live in
// subpackages: serving/local runs model-server processes on this machine
// behind Merlin's own router; serving/kube applies KServe InferenceServices
// and Istio VirtualServices. Both pass the same contract suite
// (serving/servingtest).
//
// The interface is declarative, like a Kubernetes object: the reconciler
// states the whole desired deployment of a model and the target converges
// to it, starting what is missing, waiting until it is ready, moving
// traffic, and only then stopping what is no longer listed. A rollout step
// is just another Apply with other weights.
package serving

import (
	"context"
	"errors"
	"fmt"
	"time"

	"merlin.dev/merlin/manifest"
)

// Target serves models.
type Target interface {
	// Apply converges one model to d: every listed version runs and is
	// ready, traffic is split as d says, and versions not listed are
	// stopped once no traffic reaches them. Traffic never moves to a
	// version that is not ready: if a version fails to become ready, Apply
	// returns an error and the previous split stays.
	Apply(ctx context.Context, d Deployment) error
	// Delete stops every version of a model and removes its endpoint.
	Delete(ctx context.Context, model string) error
	// Status reports what runs now, for every model the target knows,
	// including deployments restored from a previous run.
	Status(ctx context.Context) ([]ModelStatus, error)
}

// Deployment is the desired state of one model.
type Deployment struct {
	Model    string
	Versions []Version
	// Traffic maps version IDs to their share of client requests, in
	// percent; the shares add up to 100.
	Traffic map[string]int
	// Mirror, when set, copies a share of client requests to a version
	// whose responses never reach clients (a shadow); its predictions are
	// compared with the served ones.
	Mirror *Mirror
	// Compare, when set, also sends a sample of one version's requests to
	// another in the background and compares their predictions (a canary
	// checked against the stable version).
	Compare *Compare
}

// Mirror sends a share of a model's requests to a shadow version.
type Mirror struct {
	Version string
	Percent int
}

// Compare samples a version's requests to check them against a baseline.
type Compare struct {
	Version  string // the version whose requests are sampled (the canary)
	Baseline string // the version asked for the reference prediction (stable)
	Percent  int
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

// State is the condition of a version on a target.
type State string

// Version states.
const (
	StateStarting State = "starting" // launched, not ready yet
	StateReady    State = "ready"    // answering requests
	StateIdle     State = "idle"     // scaled to zero; starts on the next request
	StateFailed   State = "failed"   // crashed or could not start; see LastError
	StateStopping State = "stopping" // draining before it stops
)

// ModelStatus is what a target runs for one model.
type ModelStatus struct {
	Model    string          `json:"model"`
	Versions []VersionStatus `json:"versions"`
	Mirror   *Mirror         `json:"mirror,omitempty"`
}

// VersionStatus is the observed state of one version.
type VersionStatus struct {
	Version string `json:"version"`
	Weight  int    `json:"weight"`
	State   State  `json:"state"`
	// Endpoint is the model server's own address (host:port locally, the
	// predictor host on a cluster).
	Endpoint  string `json:"endpoint,omitempty"`
	Restarts  int    `json:"restarts"`
	LastError string `json:"lastError,omitempty"`
	// Fatal marks a failure a restart cannot fix (no runtime for the
	// model's flavor, a missing package).
	Fatal bool      `json:"fatal,omitempty"`
	Since time.Time `json:"since"`
}

// ErrNotReady is wrapped by Apply errors for versions that did not become
// ready in time.
var ErrNotReady = errors.New("version not ready")

// Validate checks a deployment's internal consistency: traffic and mirror
// name listed versions and the shares add up to 100.
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
	if m := d.Mirror; m != nil && (!listed[m.Version] || m.Percent < 0 || m.Percent > 100) {
		return fmt.Errorf("deployment of %s: invalid mirror %+v", d.Model, *m)
	}
	if c := d.Compare; c != nil && (!listed[c.Version] || !listed[c.Baseline] || c.Percent < 0 || c.Percent > 100) {
		return fmt.Errorf("deployment of %s: invalid comparison %+v", d.Model, *c)
	}
	return nil
}

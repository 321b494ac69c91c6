package manifest

// APIVersion and Kind identify a Merlin model manifest.
const (
	APIVersion = "merlin.dev/v1"
	Kind       = "Model"
	// FileName is the manifest file name the daemon and `merlin validate`
	// look for when they walk a directory.
	FileName = "merlin.yaml"
)

// Model is one document of a merlin.yaml: a model to serve and how to roll
// out new versions of it.
type Model struct {
	// APIVersion must be merlin.dev/v1.
	APIVersion string `yaml:"apiVersion" json:"apiVersion" jsonschema:"required,enum=merlin.dev/v1"`
	// Kind must be Model.
	Kind string `yaml:"kind" json:"kind" jsonschema:"required,enum=Model"`
	// Metadata names the model.
	Metadata Metadata `yaml:"metadata" json:"metadata" jsonschema:"required"`
	// Spec says what to serve and how to roll it out.
	Spec Spec `yaml:"spec" json:"spec" jsonschema:"required"`

	// File is the path of the merlin.yaml that declared the model, as it
	// appears in error messages (repo-relative in the daemon).
	File string `yaml:"-" json:"-"`
	// Errors holds every problem found in this document; a model with
	// errors must not be deployed.
	Errors ErrorList `yaml:"-" json:"-"`

	// fields maps every field path set in the YAML to its position.
	fields Fields
	// bad holds the fields the decoder rejected, so validation does not
	// report them a second time.
	bad map[string]bool
}

// Metadata identifies a model.
type Metadata struct {
	// Name is the model's name: a DNS-1123 label of at most 40 characters,
	// unique within a repository. It names the endpoint (/v1/models/NAME).
	Name string `yaml:"name" json:"name" jsonschema:"required,maxLength=40,pattern=^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"`
	// Labels are copied to every deployed object.
	Labels map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
}

// Spec is the desired state of a model.
type Spec struct {
	// Type is the model framework; it picks the model server.
	Type ModelType `yaml:"type" json:"type" jsonschema:"required"`
	// Source says where the model artifacts come from: exactly one of
	// mlflow, path or uri.
	Source Source `yaml:"source" json:"source" jsonschema:"required"`
	// TrackingURI is the MLflow tracking server for source.mlflow; the
	// daemon's mlflow.trackingURI is used when empty.
	TrackingURI string `yaml:"trackingURI,omitempty" json:"trackingURI,omitempty" jsonschema:"format=uri"`
	// Protocol is the inference protocol: v1 (KServe V1) or v2 (Open
	// Inference Protocol).
	Protocol Protocol `yaml:"protocol" json:"protocol,omitempty"`
	// Image is the container image serving the model; required for type
	// custom and forbidden otherwise.
	Image string `yaml:"image,omitempty" json:"image,omitempty"`
	// Resources requested per replica.
	Resources Resources `yaml:"resources,omitempty" json:"resources,omitempty"`
	// Replicas bounds the number of serving replicas; min 0 scales an idle
	// model to zero.
	Replicas Replicas `yaml:"replicas" json:"replicas,omitempty"`
	// Env is passed to the model server.
	Env []EnvVar `yaml:"env,omitempty" json:"env,omitempty"`
	// Rollout says how traffic moves to a new version.
	Rollout Rollout `yaml:"rollout" json:"rollout,omitempty"`
	// Preview configures shadow deployments of pull requests.
	Preview Preview `yaml:"preview" json:"preview,omitempty"`
}

// Source locates the model artifacts. Exactly one field is set.
type Source struct {
	// MLflow is an MLflow model URI: runs:/RUN_ID/PATH, models:/NAME/VERSION
	// or models:/NAME@ALIAS.
	MLflow string `yaml:"mlflow,omitempty" json:"mlflow,omitempty" jsonschema:"pattern=^(runs:/[^/]+/.+|models:/[^/@]+(/[0-9]+|@[^/@]+))$"`
	// Path is a model directory (MLflow layout) relative to this merlin.yaml.
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// URI is a remote model directory: s3://, gs://, https://, http:// or file://.
	URI string `yaml:"uri,omitempty" json:"uri,omitempty" jsonschema:"pattern=^(s3|gs|https?|file)://"`
}

// Resources are per-replica resource requests, in Kubernetes quantity
// notation.
type Resources struct {
	// CPU, e.g. 500m or 2.
	CPU Quantity `yaml:"cpu,omitempty" json:"cpu,omitempty"`
	// Memory, e.g. 1Gi.
	Memory Quantity `yaml:"memory,omitempty" json:"memory,omitempty"`
}

// Replicas bounds the replica count.
type Replicas struct {
	// Min replicas; 0 stops an idle model and starts it on the next request.
	Min int `yaml:"min" json:"min" jsonschema:"minimum=0,default=1"`
	// Max replicas; at least 1 and at least min.
	Max int `yaml:"max" json:"max" jsonschema:"minimum=1,default=1"`
}

// EnvVar is an environment variable for the model server.
type EnvVar struct {
	// Name of the variable.
	Name string `yaml:"name" json:"name" jsonschema:"required,pattern=^[A-Za-z_][A-Za-z0-9_]*$"`
	// Value of the variable.
	Value string `yaml:"value" json:"value"`
}

// Rollout says how traffic moves from the serving (stable) version to a new
// (candidate) version.
type Rollout struct {
	// Strategy: canary (stepwise traffic shift under analysis), blueGreen
	// (verify on mirrored traffic, switch all traffic at once, keep the old
	// version warm for an instant rollback), shadow (verify on mirrored
	// traffic, then switch) or direct (switch as soon as the new version is
	// ready).
	Strategy Strategy `yaml:"strategy" json:"strategy,omitempty"`
	// Steps are the candidate's traffic percentages, strictly increasing and
	// ending at 100 (canary only).
	Steps []int `yaml:"steps,omitempty" json:"steps,omitempty" jsonschema:"minItems=1"`
	// Interval is the time spent at each step before analysis decides
	// (minimum 5s).
	Interval Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
	// MirrorPercent is the share of requests mirrored to the new version
	// while shadow and blueGreen verify it (1-100).
	MirrorPercent int `yaml:"mirrorPercent,omitempty" json:"mirrorPercent,omitempty" jsonschema:"minimum=1,maximum=100"`
	// ProgressDeadline bounds how long a new version may take to become
	// ready before it is rolled back.
	ProgressDeadline Duration `yaml:"progressDeadline,omitempty" json:"progressDeadline,omitempty"`
	// Promotion: auto, or manual (wait for `merlin promote` / `/merlin
	// promote` at the last step).
	Promotion Promotion `yaml:"promotion,omitempty" json:"promotion,omitempty"`
	// Analysis sets the checks a candidate must pass at every step; the
	// direct strategy has none.
	Analysis *Analysis `yaml:"analysis,omitempty" json:"analysis,omitempty"`
}

// Analysis holds the checks run at every rollout step, comparing the
// candidate with the stable version over the same window.
type Analysis struct {
	// MinRequests is the number of candidate requests a step needs before
	// it is judged; with fewer the step holds (it never fails or passes on
	// too little data).
	MinRequests int `yaml:"minRequests,omitempty" json:"minRequests,omitempty" jsonschema:"minimum=1"`
	// MaxErrorRate is the highest tolerated share of 5xx responses.
	MaxErrorRate Percent `yaml:"maxErrorRate" json:"maxErrorRate,omitempty"`
	// MaxLatencyP99 is the highest tolerated 99th percentile latency; unset
	// means no absolute bound.
	MaxLatencyP99 Duration `yaml:"maxLatencyP99,omitempty" json:"maxLatencyP99,omitempty"`
	// MaxLatencyRatio is the highest tolerated candidate p99 / stable p99.
	MaxLatencyRatio float64 `yaml:"maxLatencyRatio,omitempty" json:"maxLatencyRatio,omitempty" jsonschema:"exclusiveMinimum=0"`
	// MinAgreement is the lowest tolerated share of requests on which the
	// candidate's prediction equals the stable version's; unset means
	// predictions are compared and reported but not judged.
	MinAgreement Percent `yaml:"minAgreement,omitempty" json:"minAgreement,omitempty"`
	// FailureLimit is the number of consecutive failed checks that roll the
	// candidate back.
	FailureLimit int `yaml:"failureLimit,omitempty" json:"failureLimit,omitempty" jsonschema:"minimum=1"`
}

// Preview configures pull-request previews: the PR's version of a model
// runs as a shadow of production, receiving mirrored traffic.
type Preview struct {
	// Enabled turns previews on (default true).
	Enabled bool `yaml:"enabled" json:"enabled,omitempty" jsonschema:"default=true"`
	// MirrorPercent is the share of production requests mirrored to the
	// preview (1-100).
	MirrorPercent int `yaml:"mirrorPercent" json:"mirrorPercent,omitempty" jsonschema:"minimum=1,maximum=100,default=100"`
}

// ModelType is the model framework.
type ModelType string

// Model types.
const (
	TypeSKLearn    ModelType = "sklearn"
	TypeXGBoost    ModelType = "xgboost"
	TypePyTorch    ModelType = "pytorch"
	TypeTensorFlow ModelType = "tensorflow"
	TypeONNX       ModelType = "onnx"
	TypePyFunc     ModelType = "pyfunc"
	TypeCustom     ModelType = "custom"
)

// ModelTypes lists the valid model types.
var ModelTypes = []ModelType{TypeSKLearn, TypeXGBoost, TypePyTorch, TypeTensorFlow, TypeONNX, TypePyFunc, TypeCustom}

// Protocol is an inference protocol.
type Protocol string

// Protocols.
const (
	ProtocolV1 Protocol = "v1"
	ProtocolV2 Protocol = "v2"
)

// Protocols lists the valid protocols.
var Protocols = []Protocol{ProtocolV1, ProtocolV2}

// Strategy is a rollout strategy.
type Strategy string

// Rollout strategies.
const (
	StrategyCanary    Strategy = "canary"
	StrategyBlueGreen Strategy = "blueGreen"
	StrategyShadow    Strategy = "shadow"
	StrategyDirect    Strategy = "direct"
)

// Strategies lists the valid rollout strategies.
var Strategies = []Strategy{StrategyCanary, StrategyBlueGreen, StrategyShadow, StrategyDirect}

// Mirrored reports whether a strategy verifies new versions on mirrored
// traffic rather than on a share of client traffic.
func (s Strategy) Mirrored() bool { return s == StrategyBlueGreen || s == StrategyShadow }

// Promotion says who promotes a candidate at the last step.
type Promotion string

// Promotion modes.
const (
	PromotionAuto   Promotion = "auto"
	PromotionManual Promotion = "manual"
)

// Promotions lists the valid promotion modes.
var Promotions = []Promotion{PromotionAuto, PromotionManual}

package prom

import (
	"cmp"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Schema names the series that measure a version: which counter counts
// requests and by which status label, which histogram times them, and how
// a version's series are selected. Router and Istio are the two in use.
type Schema struct {
	// Requests is a counter of requests with a status label CodeLabel whose
	// values are status codes ("503") or classes ("5xx"); 5xx and 0 (no
	// response) are errors, 4xx client errors.
	Requests  string
	CodeLabel string
	// Latency is the base name of a classic histogram (Latency+"_bucket"
	// with le, Latency+"_sum") observed in LatencyUnit seconds.
	Latency     string
	LatencyUnit float64
	// Traffic selects a version's Requests and Latency series.
	Traffic Selector
	// Compared is a counter of prediction comparisons by ResultLabel
	// (agree, disagree, error) and Dropped one of mirrored requests dropped;
	// either may be empty when nothing exports it. Both are selected by
	// Merlin.
	Compared    string
	ResultLabel string
	Dropped     string
	Merlin      Selector
}

// Selector returns the label matchers (without braces) that select one
// version's series, e.g. `model="iris",version="iris-0a1b2c3d"`.
type Selector func(model, version string) string

// Router is the schema of Merlin's own router (the local target), whose
// metrics Prometheus scrapes from Merlin's /metrics.
func Router() Schema {
	return Schema{
		Requests: "merlin_requests_total", CodeLabel: "code",
		Latency: "merlin_request_duration_seconds", LatencyUnit: 1,
		Traffic:  merlinSelector,
		Compared: "merlin_predictions_compared_total", ResultLabel: "result",
		Dropped: "merlin_mirror_dropped_total",
		Merlin:  merlinSelector,
	}
}

func merlinSelector(model, version string) string {
	return matcher("model", "=", model) + "," + matcher("version", "=", version)
}

// IstioOptions say how Istio's standard metrics identify a version.
type IstioOptions struct {
	// Namespace, when set, restricts to destination_workload_namespace.
	Namespace string
	// VersionLabel is the istio_* label that tells versions apart and
	// VersionPattern a regular expression for its value in which
	// "{version}" stands for the version id (an InferenceService name).
	// Defaults: destination_workload and
	// "{version}-predictor(-[0-9]+-deployment)?" — KServe names a
	// predictor's Deployment <isvc>-predictor in RawDeployment mode
	// (constants.PredictorServiceName) and <isvc>-predictor-<rev>-deployment
	// under Knative. Pod labels such as serving.kserve.io/inferenceservice
	// do not reach Istio's metrics unless a Telemetry tagOverride copies
	// them; with one, set VersionLabel to its tag and VersionPattern to
	// "{version}".
	VersionLabel   string
	VersionPattern string
	// Reporter is which proxy's report counts: "destination" (default;
	// the predictor pod's sidecar, so gateway and mesh clients are counted
	// once) or "source".
	Reporter string
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// Istio is the schema of Istio's standard metrics for the Kubernetes
// target: istio_requests_total by response_code and the millisecond
// histogram istio_request_duration_milliseconds. Comparisons and dropped
// mirrors are still read from Merlin's own counters (model and version
// labels) for whatever exports them.
func Istio(o IstioOptions) (Schema, error) {
	o.VersionLabel = cmp.Or(o.VersionLabel, "destination_workload")
	o.VersionPattern = cmp.Or(o.VersionPattern, "{version}-predictor(-[0-9]+-deployment)?")
	o.Reporter = cmp.Or(o.Reporter, "destination")
	if !labelName.MatchString(o.VersionLabel) {
		return Schema{}, fmt.Errorf("istio version label %q is not a Prometheus label name", o.VersionLabel)
	}
	if !strings.Contains(o.VersionPattern, "{version}") {
		return Schema{}, fmt.Errorf("istio version pattern %q does not contain {version}", o.VersionPattern)
	}
	if _, err := regexp.Compile(strings.ReplaceAll(o.VersionPattern, "{version}", "v")); err != nil {
		return Schema{}, fmt.Errorf("istio version pattern %q: %w", o.VersionPattern, err)
	}
	if o.Reporter != "destination" && o.Reporter != "source" {
		return Schema{}, fmt.Errorf("istio reporter %q must be destination or source", o.Reporter)
	}
	traffic := func(_, version string) string {
		m := []string{
			matcher("reporter", "=", o.Reporter),
			matcher(o.VersionLabel, "=~", strings.ReplaceAll(o.VersionPattern, "{version}", regexp.QuoteMeta(version))),
		}
		if o.Namespace != "" {
			m = append(m, matcher("destination_workload_namespace", "=", o.Namespace))
		}
		return strings.Join(m, ",")
	}
	return Schema{
		Requests: "istio_requests_total", CodeLabel: "response_code",
		Latency: "istio_request_duration_milliseconds", LatencyUnit: 0.001,
		Traffic:  traffic,
		Compared: "merlin_predictions_compared_total", ResultLabel: "result",
		Dropped: "merlin_mirror_dropped_total",
		Merlin:  merlinSelector,
	}, nil
}

func (s Schema) validate() error {
	for _, n := range []struct{ what, name string }{
		{"requests metric", s.Requests}, {"code label", s.CodeLabel}, {"latency metric", s.Latency},
	} {
		if !labelName.MatchString(n.name) {
			return fmt.Errorf("schema: %s %q is not a metric or label name", n.what, n.name)
		}
	}
	for _, n := range []string{s.Compared, s.Dropped} {
		if n != "" && !labelName.MatchString(n) {
			return fmt.Errorf("schema: %q is not a metric name", n)
		}
	}
	if s.Compared != "" && !labelName.MatchString(s.ResultLabel) {
		return fmt.Errorf("schema: result label %q is not a label name", s.ResultLabel)
	}
	if !(s.LatencyUnit > 0) {
		return fmt.Errorf("schema: latency unit %v must be positive", s.LatencyUnit)
	}
	if s.Traffic == nil || ((s.Compared != "" || s.Dropped != "") && s.Merlin == nil) {
		return fmt.Errorf("schema: selectors are required")
	}
	return nil
}

// matcher renders one label matcher; strconv.Quote's escapes are valid
// PromQL string escapes.
func matcher(label, op, value string) string {
	return label + op + strconv.Quote(value)
}

// errorClass and clientClass classify a status label value, which is a
// code ("503") or a class ("5xx"). Envoy reports 0 when no response came.
func errorClass(code string) bool  { return code == "0" || strings.HasPrefix(code, "5") }
func clientClass(code string) bool { return strings.HasPrefix(code, "4") }

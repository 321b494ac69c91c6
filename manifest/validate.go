package manifest

import (
	"cmp"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// MaxNameLength bounds model names, leaving room for the version suffix
// (-<digest8>) and the suffixes KServe appends within Kubernetes' 63.
const MaxNameLength = 40

// MinInterval is the shortest rollout step interval.
const MinInterval = 5 * time.Second

var (
	dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	envName      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	mlflowRuns   = regexp.MustCompile(`^runs:/([^/]+)/(.+)$`)
	mlflowModels = regexp.MustCompile(`^models:/([^/@]+)(?:/([^/@]+)|@([^/@]+))$`)
	positiveInt  = regexp.MustCompile(`^[1-9][0-9]*$`)
)

// checker collects positioned validation errors for one model.
type checker struct {
	m    *Model
	errs ErrorList
}

// at reports a problem with a field's value.
func (c *checker) at(field, format string, args ...any) {
	if c.m.bad[field] {
		return
	}
	c.errs = append(c.errs, c.m.Errorf(field, format, args...))
}

// atKey reports a problem with a field's presence, at its key.
func (c *checker) atKey(field, format string, args ...any) {
	if c.m.bad[field] {
		return
	}
	p := c.m.KeyPos(field)
	c.errs = append(c.errs, &Error{File: c.m.File, Line: p.Line, Column: p.Column, Field: field, Message: fmt.Sprintf(format, args...)})
}

// validate checks every rule that needs only the document itself. Fields
// the decoder already rejected are not reported twice.
func validate(m *Model) ErrorList {
	c := &checker{m: m}
	c.header()
	c.source()
	c.serving()
	c.rollout()
	if p := m.Spec.Preview.MirrorPercent; p < 1 || p > 100 {
		c.at("spec.preview.mirrorPercent", "must be from 1 to 100, got %d", p)
	}
	return c.errs
}

func (c *checker) required(field, what string) bool {
	if c.m.Set(field) {
		return true
	}
	c.at(field, "%s is required", what)
	return false
}

func (c *checker) header() {
	m := c.m
	if c.required("apiVersion", "apiVersion ("+APIVersion+")") && m.APIVersion != APIVersion {
		c.at("apiVersion", "unsupported apiVersion %q; use %s", m.APIVersion, APIVersion)
	}
	if c.required("kind", "kind (Model)") && m.Kind != Kind {
		c.at("kind", "unsupported kind %q; use %s", m.Kind, Kind)
	}
	if c.required("metadata", "metadata") && c.required("metadata.name", "metadata.name") {
		switch name := m.Metadata.Name; {
		case len(name) > MaxNameLength:
			c.at("metadata.name", "%q is %d characters long; at most %d are allowed", name, len(name), MaxNameLength)
		case !dns1123Label.MatchString(name):
			c.at("metadata.name", "%q must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit", name)
		}
	}
	for k, v := range m.Metadata.Labels {
		field := "metadata.labels." + k
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			c.atKey(field, "invalid label key %q: %s", k, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
			c.at(field, "invalid label value %q: %s", v, strings.Join(msgs, "; "))
		}
	}
	c.required("spec", "spec")
}

func (c *checker) source() {
	if !c.m.Set("spec") || !c.required("spec.source", "spec.source (one of mlflow, path, uri)") {
		return
	}
	var set []string // in file order, so the error lands on the later ones
	for _, f := range []string{"mlflow", "path", "uri"} {
		if c.m.Set("spec.source." + f) {
			set = append(set, f)
		}
	}
	slices.SortFunc(set, func(a, b string) int {
		pa, pb := c.m.KeyPos("spec.source."+a), c.m.KeyPos("spec.source."+b)
		return cmp.Or(cmp.Compare(pa.Line, pb.Line), cmp.Compare(pa.Column, pb.Column))
	})
	switch {
	case len(set) == 0:
		c.atKey("spec.source", "set exactly one of mlflow, path or uri")
		return
	case len(set) > 1:
		for _, f := range set[1:] {
			c.atKey("spec.source."+f, "set exactly one of mlflow, path or uri (%s is set too)", set[0])
		}
	}
	c.sourceValues()
}

// sourceValues checks the values of the source fields that are set.
func (c *checker) sourceValues() {
	s := c.m.Spec.Source
	if c.m.Set("spec.source.mlflow") {
		if err := checkMLflowURI(s.MLflow); err != "" {
			c.at("spec.source.mlflow", "%s", err)
		}
	} else if c.m.Set("spec.trackingURI") {
		c.atKey("spec.trackingURI", "trackingURI is only used with source.mlflow")
	}
	if c.m.Set("spec.source.path") {
		switch {
		case s.Path == "":
			c.at("spec.source.path", "must not be empty")
		case path.IsAbs(s.Path) || strings.Contains(s.Path, `\`):
			c.at("spec.source.path", "%q must be a slash-separated path relative to this merlin.yaml", s.Path)
		}
	}
	if c.m.Set("spec.source.uri") {
		u, err := url.Parse(s.URI)
		switch {
		case err != nil:
			c.at("spec.source.uri", "invalid URI %q", s.URI)
		case !oneOfStr(u.Scheme, "s3", "gs", "https", "http", "file"):
			c.at("spec.source.uri", "unsupported URI %q: use s3://, gs://, https://, http:// or file://", s.URI)
		case u.Host == "" && u.Scheme != "file", u.Scheme == "file" && u.Path == "":
			c.at("spec.source.uri", "URI %q names no bucket, host or path", s.URI)
		}
	}
	if t := c.m.Spec.TrackingURI; c.m.Set("spec.trackingURI") {
		if u, err := url.Parse(t); err != nil || !oneOfStr(u.Scheme, "http", "https", "file", "databricks") {
			c.at("spec.trackingURI", "invalid tracking URI %q: use http(s)://host[:port], file:///path or databricks", t)
		}
	}
}

// checkMLflowURI returns why an MLflow model URI is invalid, or "".
func checkMLflowURI(s string) string {
	const forms = "use runs:/RUN_ID/PATH, models:/NAME/VERSION or models:/NAME@ALIAS"
	switch {
	case strings.HasPrefix(s, "runs:/"):
		if !mlflowRuns.MatchString(s) {
			return fmt.Sprintf("invalid MLflow run URI %q: %s", s, forms)
		}
	case strings.HasPrefix(s, "models:/"):
		m := mlflowModels.FindStringSubmatch(s)
		if m == nil {
			return fmt.Sprintf("invalid MLflow model URI %q: %s", s, forms)
		}
		if m[2] != "" && !positiveInt.MatchString(m[2]) {
			return fmt.Sprintf("invalid MLflow model version %q in %q: versions are positive integers (for a stage or alias use models:/%s@ALIAS)", m[2], s, m[1])
		}
	default:
		return fmt.Sprintf("unsupported MLflow URI %q: %s", s, forms)
	}
	return ""
}

func (c *checker) serving() {
	s := c.m.Spec
	if c.m.Set("spec") && c.required("spec.type", "spec.type ("+joinEnum(ModelTypes)+")") {
		if err := oneOf(s.Type, ModelTypes); err != nil {
			c.at("spec.type", "%s", err)
		}
	}
	if err := oneOf(s.Protocol, Protocols); err != nil {
		c.at("spec.protocol", "%s", err)
	}
	switch {
	case s.Type == TypeCustom && s.Image == "":
		c.atKey("spec.image", "type custom needs an image")
	case s.Type != TypeCustom && c.m.Set("spec.image"):
		c.atKey("spec.image", "image is only for type custom; %s models are served by Merlin's model server", s.Type)
	}
	for f, q := range map[string]Quantity{"spec.resources.cpu": s.Resources.CPU, "spec.resources.memory": s.Resources.Memory} {
		if v, err := resource.ParseQuantity(string(q)); q != "" && err == nil && v.Sign() <= 0 {
			c.at(f, "must be greater than zero, got %s", q)
		}
	}
	c.replicasAndEnv()
}

func (c *checker) replicasAndEnv() {
	s := c.m.Spec
	r := s.Replicas
	switch {
	case r.Min < 0:
		c.at("spec.replicas.min", "must not be negative, got %d", r.Min)
	case r.Max < 1:
		c.at("spec.replicas.max", "must be at least 1, got %d", r.Max)
	case r.Min > r.Max:
		c.at("spec.replicas.min", "min (%d) must not exceed max (%d)", r.Min, r.Max)
	}
	seen := map[string]int{}
	for i, e := range s.Env {
		field := fmt.Sprintf("spec.env[%d]", i)
		switch {
		case !c.m.Set(field + ".name"):
			c.atKey(field, "env entries need a name")
		case !envName.MatchString(e.Name):
			c.at(field+".name", "invalid environment variable name %q: use letters, digits and _, not starting with a digit", e.Name)
		}
		if j, dup := seen[e.Name]; dup && e.Name != "" {
			c.at(field+".name", "duplicate environment variable %q (also spec.env[%d])", e.Name, j)
		}
		seen[e.Name] = i
	}
}

func (c *checker) rollout() {
	r := c.m.Spec.Rollout
	if err := oneOf(r.Strategy, Strategies); err != nil {
		c.at("spec.rollout.strategy", "%s", err)
		return
	}
	if r.ProgressDeadline.D() < MinInterval {
		c.at("spec.rollout.progressDeadline", "must be at least %s, got %s", MinInterval, r.ProgressDeadline.D())
	}
	if !r.Strategy.Mirrored() && c.m.Set("spec.rollout.mirrorPercent") {
		c.atKey("spec.rollout.mirrorPercent", "mirrorPercent only applies to strategies shadow and blueGreen, which verify on mirrored traffic")
	} else if r.Strategy.Mirrored() && (r.MirrorPercent < 1 || r.MirrorPercent > 100) {
		c.at("spec.rollout.mirrorPercent", "must be from 1 to 100, got %d", r.MirrorPercent)
	}
	if r.Strategy == StrategyDirect {
		for _, f := range []string{"steps", "interval", "promotion", "analysis"} {
			if c.m.Set("spec.rollout." + f) {
				c.atKey("spec.rollout."+f, "%s has no effect with strategy direct, which switches traffic as soon as the new version is ready", f)
			}
		}
		return
	}
	if r.Strategy != StrategyCanary && c.m.Set("spec.rollout.steps") {
		c.atKey("spec.rollout.steps", "steps only apply to strategy canary; %s moves all traffic at once", r.Strategy)
	}
	c.steps(r.Steps)
	if r.Interval.D() < MinInterval {
		c.at("spec.rollout.interval", "must be at least %s, got %s", MinInterval, r.Interval.D())
	}
	if err := oneOf(r.Promotion, Promotions); err != nil {
		c.at("spec.rollout.promotion", "%s", err)
	}
	c.analysis(r.Analysis)
}

func (c *checker) steps(steps []int) {
	if c.m.Spec.Rollout.Strategy != StrategyCanary {
		return
	}
	if len(steps) == 0 {
		c.at("spec.rollout.steps", "must list at least one step, ending at 100")
		return
	}
	for i, s := range steps {
		field := fmt.Sprintf("spec.rollout.steps[%d]", i)
		switch {
		case s < 1 || s > 100:
			c.at(field, "step %d is out of range: steps are traffic percentages from 1 to 100", s)
		case i > 0 && s <= steps[i-1]:
			c.at(field, "steps must be strictly increasing: %d follows %d", s, steps[i-1])
		case i == len(steps)-1 && s != 100:
			c.at(field, "the last step must be 100, got %d", s)
		}
	}
}

func (c *checker) analysis(a *Analysis) {
	const f = "spec.rollout.analysis."
	if a.MinRequests < 1 {
		c.at(f+"minRequests", "must be at least 1, got %d (a rollout must never be judged on no data)", a.MinRequests)
	}
	for name, p := range map[string]Percent{"maxErrorRate": a.MaxErrorRate, "minAgreement": a.MinAgreement} {
		if p < 0 || p > 100 {
			c.at(f+name, "must be from 0%% to 100%%, got %s", p)
		}
	}
	if c.m.Set(f+"maxLatencyP99") && a.MaxLatencyP99 <= 0 {
		c.at(f+"maxLatencyP99", "must be greater than zero (leave it out for no bound)")
	}
	if a.MaxLatencyRatio <= 0 {
		c.at(f+"maxLatencyRatio", "must be greater than zero, got %g", a.MaxLatencyRatio)
	}
	if a.FailureLimit < 1 {
		c.at(f+"failureLimit", "must be at least 1, got %d", a.FailureLimit)
	}
}

func oneOfStr(s string, allowed ...string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}

func joinEnum[T ~string](values []T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, " | ")
}

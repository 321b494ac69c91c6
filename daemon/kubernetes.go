package daemon

import (
	"cmp"
	"fmt"
	"regexp"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"merlin.dev/merlin/manifest"
)

// Leader election defaults: client-go's recommended timings.
const (
	DefaultLeaseName     = "merlin-leader"
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

func (k *Kubernetes) defaults(target string) {
	le := &k.LeaderElection
	if le.Enabled == nil {
		on := target == "kubernetes"
		le.Enabled = &on
	}
	le.LeaseName = cmp.Or(le.LeaseName, DefaultLeaseName)
	le.LeaseDuration = cmp.Or(le.LeaseDuration, manifest.Duration(DefaultLeaseDuration))
	le.RenewDeadline = cmp.Or(le.RenewDeadline, manifest.Duration(DefaultRenewDeadline))
	le.RetryPeriod = cmp.Or(le.RetryPeriod, manifest.Duration(DefaultRetryPeriod))
}

// fieldProblem is a problem with one field of the configuration, before it
// is positioned in the file.
type fieldProblem struct {
	field, msg string
}

// registryRE is a registry host (with an optional port) and an optional
// repository path, as image references spell them.
var registryRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$`)

// validate checks the kubernetes block (after defaults). target is the
// configured target: the block is required only for kubernetes, but what
// is written is checked either way.
func (k Kubernetes) validate(target string) []fieldProblem {
	var out []fieldProblem
	add := func(field, format string, args ...any) {
		out = append(out, fieldProblem{"kubernetes." + field, fmt.Sprintf(format, args...)})
	}
	switch {
	case k.Namespace == "" && target == "kubernetes":
		add("namespace", "is required with target kubernetes (where models are deployed)")
	case k.Namespace != "":
		if errs := validation.IsDNS1123Label(k.Namespace); len(errs) > 0 {
			add("namespace", "%q is not a valid namespace: %s", k.Namespace, errs[0])
		}
	}
	if msg := checkRegistry(k.Registry); msg != "" {
		add("registry", "%q %s", k.Registry, msg)
	}
	if msg := checkGateway(k.Gateway); msg != "" {
		add("gateway", "%q %s", k.Gateway, msg)
	}
	switch {
	case k.Host == "" && target == "kubernetes":
		add("host", "is required with target kubernetes (the host name clients call, e.g. models.example.com)")
	case k.Host != "":
		if msg := checkHost(k.Host); msg != "" {
			add("host", "%q %s", k.Host, msg)
		}
	}
	return append(out, k.LeaderElection.validate(target)...)
}

// checkRegistry checks where images are pushed (empty is fine) and says
// what is wrong with it.
func checkRegistry(r string) string {
	switch {
	case r == "":
		return ""
	case strings.Contains(r, "://"):
		return "has a scheme: write the registry without it, e.g. registry.example.com/models"
	case !registryRE.MatchString(r):
		return "is not a registry: use host[:port][/path] in lower case, e.g. registry.example.com/models"
	}
	return ""
}

// checkHost checks the host name clients call; a wildcard (*.example.com)
// is allowed, as Istio allows it.
func checkHost(h string) string {
	check := validation.IsDNS1123Subdomain
	if strings.HasPrefix(h, "*.") {
		check = validation.IsWildcardDNS1123Subdomain
	}
	if errs := check(h); len(errs) > 0 {
		return "is not a valid host: " + errs[0]
	}
	return ""
}

// checkGateway checks an Istio gateway reference, [namespace/]name (empty
// is fine; without a namespace, the models namespace), and says what is
// wrong with it.
func checkGateway(g string) string {
	if g == "" {
		return ""
	}
	ns, name, qualified := strings.Cut(g, "/")
	if !qualified {
		name = g
	} else if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return "has an invalid namespace: " + errs[0] + "; use namespace/name"
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "has an invalid gateway name: " + errs[0] + "; use namespace/name"
	}
	return ""
}

func (l LeaderElection) validate(target string) []fieldProblem {
	var out []fieldProblem
	add := func(field, format string, args ...any) {
		out = append(out, fieldProblem{"kubernetes.leaderElection." + field, fmt.Sprintf(format, args...)})
	}
	if l.On() && target != "kubernetes" {
		add("enabled", "leader election needs target kubernetes (the Lease lives in the cluster)")
	}
	if l.Namespace != "" {
		if errs := validation.IsDNS1123Label(l.Namespace); len(errs) > 0 {
			add("namespace", "%q is not a valid namespace: %s", l.Namespace, errs[0])
		}
	}
	if errs := validation.IsDNS1123Subdomain(l.LeaseName); len(errs) > 0 {
		add("leaseName", "%q is not a valid object name: %s", l.LeaseName, errs[0])
	}
	lease, renew, retry := l.LeaseDuration.D(), l.RenewDeadline.D(), l.RetryPeriod.D()
	if lease <= renew {
		add("leaseDuration", "%s must be longer than renewDeadline (%s), so that a leader steps down before another takes over", lease, renew)
	}
	if float64(renew) <= 1.2*float64(retry) {
		add("renewDeadline", "%s must be longer than 1.2 × retryPeriod (%s)", renew, retry)
	}
	return out
}

// position places each problem in the file, as path:line:col: field:
// message, with the positions the decoder recorded.
func position(fields manifest.Fields, problems []fieldProblem) []string {
	out := make([]string, len(problems))
	for i, p := range problems {
		out[i] = fields.Errorf(p.field, "%s", p.msg).Error()
	}
	return out
}

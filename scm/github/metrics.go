package github

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts the client's API calls; register it with a Prometheus
// registry (it is a prometheus.Collector) to expose them on /metrics.
type Metrics struct {
	calls     *prometheus.CounterVec
	remaining prometheus.Gauge
}

// NewMetrics returns empty counters.
func NewMetrics() *Metrics {
	return &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "merlin_github_api_calls_total",
			Help: "GitHub API requests sent, by endpoint template and HTTP status (304 = answered from the ETag cache, free of rate limit).",
		}, []string{"endpoint", "code"}),
		remaining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "merlin_github_rate_limit_remaining",
			Help: "Requests left in GitHub's current rate-limit window, as of the last response (X-RateLimit-Remaining).",
		}),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.calls.Describe(ch)
	m.remaining.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.calls.Collect(ch)
	m.remaining.Collect(ch)
}

func (m *Metrics) observe(endpoint string, code int, remaining string) {
	m.calls.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
	if n, err := strconv.Atoi(remaining); err == nil {
		m.remaining.Set(float64(n))
	}
}

// endpoints are the API's path templates the client calls, so that metrics
// are labelled by a bounded set rather than by every comment id and SHA.
var endpoints = []string{
	"/app/installations/{installation_id}/access_tokens",
	"/repos/{owner}/{repo}/issues/{issue_number}/comments",
	"/repos/{owner}/{repo}/issues/comments/{comment_id}",
	"/repos/{owner}/{repo}/statuses/{sha}",
	"/repos/{owner}/{repo}/collaborators/{username}/permission",
	"/repos/{owner}/{repo}/contents/{path}",
	"/repos/{owner}/{repo}/pulls",
	"/repos/{owner}/{repo}/pulls/{pull_number}",
	"/orgs/{org}/teams/{team_slug}/memberships/{username}",
}

// Endpoint names a request for metrics: "METHOD template", or "METHOD
// other" for a path none of the templates matches. A GitHub Enterprise
// prefix (/api/v3) is ignored.
func Endpoint(method, path string) string {
	path = strings.TrimPrefix(path, "/api/v3")
	for _, tmpl := range endpoints {
		if matchTemplate(tmpl, path) {
			return method + " " + tmpl
		}
	}
	return method + " other"
}

// matchTemplate reports whether path fits tmpl; a {path} segment takes the
// rest of the path (file paths have slashes).
func matchTemplate(tmpl, path string) bool {
	ts := strings.Split(strings.Trim(tmpl, "/"), "/")
	ps := strings.Split(strings.Trim(path, "/"), "/")
	for i, t := range ts {
		if i >= len(ps) || ps[i] == "" {
			return false
		}
		if t == "{path}" {
			return true
		}
		if !strings.HasPrefix(t, "{") && t != ps[i] {
			return false
		}
	}
	return len(ps) == len(ts)
}

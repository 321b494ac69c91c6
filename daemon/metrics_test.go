package daemon

import (
	"strings"
	"testing"

	"merlin.dev/merlin/metrics"
	"merlin.dev/merlin/metrics/prom"
)

func TestMetricsProviderFromConfig(t *testing.T) {
	parse := func(t *testing.T, extra string) *Config {
		t.Helper()
		cfg, err := ParseConfig("merlin.config.yaml", []byte("repositories: [{name: models, url: /tmp/models}]\n"+extra))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	p, err := newProvider(parse(t, ""), metrics.NewRegistry())
	if _, ok := p.(*metrics.Local); err != nil || !ok {
		t.Errorf("default provider = %T, %v; want *metrics.Local", p, err)
	}
	for _, extra := range []string{
		"metrics: {provider: prometheus, url: http://prometheus:9090}\n",
		"metrics: {provider: prometheus, url: http://prometheus:9090, series: istio, istio: {namespace: models, reporter: source}}\n",
	} {
		p, err := newProvider(parse(t, extra), metrics.NewRegistry())
		if _, ok := p.(*prom.Provider); err != nil || !ok {
			t.Errorf("%s: provider = %T, %v; want *prom.Provider", extra, p, err)
		}
	}
	for extra, want := range map[string]string{
		"metrics: {provider: prometheus, url: http://p:9090, series: datadog}\n":                               `metrics.series: "datadog" must be router or istio`,
		"metrics: {provider: prometheus, url: http://p:9090, series: istio, istio: {versionPattern: \"x\"}}\n": "does not contain {version}",
		"metrics: {provider: prometheus, url: \"p:9090\"}\n":                                                   "want http(s)://",
	} {
		_, err := newProvider(parse(t, extra), metrics.NewRegistry())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want one containing %q", extra, err, want)
		}
	}
	if _, err := ParseConfig("c.yaml", []byte("repositories: [{name: m, url: /tmp/m}]\nmetrics: {provider: prometheus, url: http://p, istio: {nope: 1}}\n")); err == nil {
		t.Error("unknown field under metrics.istio accepted")
	}
}

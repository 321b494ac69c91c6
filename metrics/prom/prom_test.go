package prom_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"

	"merlin.dev/merlin/internal/promtest"
	"merlin.dev/merlin/metrics"
	"merlin.dev/merlin/metrics/metricstest"
	"merlin.dev/merlin/metrics/prom"
)

// exposition is the scrape target: an HTTP server exposing, through
// promhttp as server/ does for the router, the registries of every
// backend of a test. Backends replace their registry on Restart.
type exposition struct {
	mu    sync.Mutex
	slots []prometheus.Gatherer
}

func (e *exposition) Gather() ([]*dto.MetricFamily, error) {
	e.mu.Lock()
	gs := append(prometheus.Gatherers(nil), e.slots...)
	e.mu.Unlock()
	return gs.Gather()
}

func (e *exposition) add(g prometheus.Gatherer) (slot int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.slots = append(e.slots, g)
	return len(e.slots) - 1
}

func (e *exposition) set(slot int, g prometheus.Gatherer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.slots[slot] = g
}

// startPrometheus serves an exposition and runs a real Prometheus
// scraping it every second.
func startPrometheus(t *testing.T) (*exposition, *promtest.Server) {
	promtest.Binary(t)
	e := &exposition{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(e, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return e, promtest.Start(t, ln.Addr().String())
}

func unreachable(t *testing.T) metrics.Provider {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here any more
	p, err := prom.New(prom.Options{URL: "http://" + addr, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// routerBackend feeds metrics.Stats — what the router records per request
// — into a metrics.Registry exposed for scraping. The router itself
// (serving/local) only forwards to model-server processes it spawns, so it
// cannot be put in front of an in-process upstream; the Stats it writes
// and the Registry it exports are the same code.
type routerBackend struct {
	e    *exposition
	prom *promtest.Server
	slot int
	reg  *metrics.Registry
	p    *prom.Provider
}

func (b *routerBackend) Provider() metrics.Provider { return b.p }
func (b *routerBackend) Observe(m, v string, code int, d time.Duration) {
	b.reg.For(m, v).Observe(code, d)
}
func (b *routerBackend) Compared(m, v, outcome string) { b.reg.For(m, v).Compared(outcome) }
func (b *routerBackend) Dropped(m, v string)           { b.reg.For(m, v).Dropped() }
func (b *routerBackend) Settle(t *testing.T)           { b.prom.Settle(t) }
func (b *routerBackend) Restart(*testing.T) {
	b.reg = metrics.NewRegistry()
	r := prometheus.NewRegistry()
	r.MustRegister(b.reg)
	b.e.set(b.slot, r)
}

func TestRouterContract(t *testing.T) {
	e, ps := startPrometheus(t)
	p, err := prom.New(prom.Options{URL: ps.URL})
	if err != nil {
		t.Fatal(err)
	}
	metricstest.Run(t, metricstest.Harness{
		Start: func(t *testing.T) metricstest.Backend {
			b := &routerBackend{e: e, prom: ps, slot: e.add(prometheus.NewRegistry()), p: p}
			b.Restart(t)
			return b
		},
		Unreachable: unreachable,
	})
}

// istioBuckets are Istio's default request duration buckets (ms).
var istioBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// istioBackend records requests as the sidecars of a mesh do: each
// request is reported by the client's proxy (reporter=source) and by the
// predictor pod's (reporter=destination), from alternating clients, in
// Istio's millisecond histogram. The candidate runs as a RawDeployment
// (<isvc>-predictor), the stable version under Knative
// (<isvc>-predictor-00001-deployment), as KServe names them.
type istioBackend struct {
	e        *exposition
	prom     *promtest.Server
	slot     int
	p        *prom.Provider
	n        int
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	compared *prometheus.CounterVec
	dropped  *prometheus.CounterVec
}

func (b *istioBackend) workload(v string) string {
	if len(v) > 8 && v[len(v)-8] == 's' { // stable ids end in s + 7 digits
		return v + "-predictor-00001-deployment"
	}
	return v + "-predictor"
}

func (b *istioBackend) Provider() metrics.Provider { return b.p }
func (b *istioBackend) Observe(_, v string, code int, d time.Duration) {
	b.n++
	source := []string{"istio-ingressgateway", "batch-scorer"}[b.n%2]
	for _, reporter := range []string{"source", "destination"} {
		l := prometheus.Labels{"reporter": reporter, "source_workload": source, "destination_workload": b.workload(v),
			"destination_workload_namespace": "models", "response_code": strconv.Itoa(code)}
		b.requests.With(l).Inc()
		b.duration.With(l).Observe(float64(d) / float64(time.Millisecond))
	}
	// A namesake in another namespace must not count.
	l := prometheus.Labels{"reporter": "destination", "source_workload": source, "destination_workload": b.workload(v),
		"destination_workload_namespace": "staging", "response_code": "200"}
	b.requests.With(l).Inc()
	b.duration.With(l).Observe(1)
}
func (b *istioBackend) Compared(m, v, outcome string) {
	b.compared.WithLabelValues(m, v, outcome).Inc()
}
func (b *istioBackend) Dropped(m, v string) { b.dropped.WithLabelValues(m, v).Inc() }
func (b *istioBackend) Settle(t *testing.T) { b.prom.Settle(t) }
func (b *istioBackend) Restart(*testing.T) {
	labels := []string{"reporter", "source_workload", "destination_workload", "destination_workload_namespace", "response_code"}
	b.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "Requests."}, labels)
	b.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds", Help: "Durations.", Buckets: istioBuckets}, labels)
	b.compared = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "merlin_predictions_compared_total", Help: "Compared."}, []string{"model", "version", "result"})
	b.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "merlin_mirror_dropped_total", Help: "Dropped."}, []string{"model", "version"})
	r := prometheus.NewRegistry()
	r.MustRegister(b.requests, b.duration, b.compared, b.dropped)
	b.e.set(b.slot, r)
}

func TestIstioContract(t *testing.T) {
	e, ps := startPrometheus(t)
	schema, err := prom.Istio(prom.IstioOptions{Namespace: "models"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := prom.New(prom.Options{URL: ps.URL, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	bounds := make([]float64, len(istioBuckets))
	for i, ms := range istioBuckets {
		bounds[i] = ms / 1000
	}
	metricstest.Run(t, metricstest.Harness{
		Start: func(t *testing.T) metricstest.Backend {
			b := &istioBackend{e: e, prom: ps, slot: e.add(prometheus.NewRegistry()), p: p}
			b.Restart(t)
			return b
		},
		LatencyBounds: bounds,
		Unreachable:   unreachable,
	})
}

// TestIstioP99AgreesWithHistogramQuantile checks the provider's p99 from
// re-bucketed Istio buckets against what PromQL's histogram_quantile says
// on the same real Prometheus: within one fine bucket (25%).
func TestIstioP99AgreesWithHistogramQuantile(t *testing.T) {
	e, ps := startPrometheus(t)
	schema, err := prom.Istio(prom.IstioOptions{Namespace: "models"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := prom.New(prom.Options{URL: ps.URL, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	b := &istioBackend{e: e, prom: ps, slot: e.add(prometheus.NewRegistry()), p: p}
	b.Restart(t)
	const m, v = "hq", "hq-0a1b2c3d"
	// Both clients' series exist before the window: increase() ignores the
	// first sample of a series born inside its range (the provider does
	// not), which is not what this test compares.
	b.Observe(m, v, 200, 20*time.Millisecond)
	b.Observe(m, v, 200, 20*time.Millisecond)
	b.Settle(t)
	since := time.Now()
	for i := range 200 {
		d := 20 * time.Millisecond
		switch {
		case i%50 == 0:
			d = 400 * time.Millisecond
		case i%10 == 0:
			d = 70 * time.Millisecond
		}
		b.Observe(m, v, 200, d)
	}
	b.Settle(t)
	b.Settle(t) // increase() needs two samples in its range
	now := time.Now()
	w, err := p.Window(context.Background(), metrics.Query{Model: m, Candidate: v, Since: since})
	if err != nil {
		t.Fatal(err)
	}
	if w.Candidate.Requests != 200 {
		t.Fatalf("window counted %d requests, want 200", w.Candidate.Requests)
	}
	sel := schema.Traffic(m, v)
	rng := fmt.Sprintf("[%dms]", now.Sub(since).Milliseconds()+1000)
	ask := func(q string) float64 {
		t.Helper()
		c, err := api.NewClient(api.Config{Address: ps.URL})
		if err != nil {
			t.Fatal(err)
		}
		val, _, err := v1.NewAPI(c).Query(context.Background(), q, now)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		vec, ok := val.(model.Vector)
		if !ok || len(vec) != 1 {
			t.Fatalf("%s = %v, want one sample", q, val)
		}
		return float64(vec[0].Value)
	}
	hq := ask("histogram_quantile(0.99, sum by (le) (increase(istio_request_duration_milliseconds_bucket{" + sel + "}" + rng + ")))")
	inc := ask("sum(increase(istio_requests_total{" + sel + "}" + rng + "))")
	got := float64(w.Candidate.Quantile(0.99)) / float64(time.Millisecond)
	t.Logf("p99: provider %.1fms, histogram_quantile %.1fms; 200 requests: provider %d, increase() %.2f", got, hq, w.Candidate.Requests, inc)
	if got < hq/1.25 || got > hq*1.25 {
		t.Errorf("provider p99 %.1fms, histogram_quantile %.1fms: want within 25%%", got, hq)
	}
}

package metrics

import (
	"math"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Latency buckets: 61 upper bounds growing by 25% from 100µs to about 65s,
// fine enough that a p99 read from them is within 12.5% of the truth.
var bucketBounds = func() []float64 {
	b := make([]float64, 61)
	for i := range b {
		b[i] = 0.0001 * math.Pow(1.25, float64(i))
	}
	return b
}()

// BucketBounds returns the latency histogram's upper bounds in seconds.
func BucketBounds() []float64 { return append([]float64(nil), bucketBounds...) }

// Comparison outcomes of a candidate's prediction against the baseline's.
const (
	Agree    = "agree"
	Disagree = "disagree"
	Failed   = "error" // either side failed or answered something unreadable
)

// Stats are the cumulative counters of one model version, written by the
// router on every request without locks.
type Stats struct {
	Model, Version string

	requests atomic.Uint64
	errors   atomic.Uint64 // 5xx and transport failures
	client   atomic.Uint64 // 4xx
	sum      atomic.Uint64 // total latency, nanoseconds
	buckets  [62]atomic.Uint64
	agree    atomic.Uint64
	disagree atomic.Uint64
	cmpFail  atomic.Uint64
	dropped  atomic.Uint64 // mirrored requests dropped under load
}

// Observe records one request's status code and latency. Errors are the
// version's failures (5xx, or no answer); 501 Not Implemented is counted
// with the client's (4xx): it answers a request that no version serves
// (e.g. :explain without an explainer), so it says nothing of the version,
// and a client must not be able to roll back a canary by sending it.
func (s *Stats) Observe(code int, d time.Duration) {
	s.requests.Add(1)
	switch {
	case code == http.StatusNotImplemented:
		s.client.Add(1)
	case code >= 500 || code == 0:
		s.errors.Add(1)
	case code >= 400:
		s.client.Add(1)
	}
	s.sum.Add(uint64(d.Nanoseconds()))
	s.buckets[bucketOf(d.Seconds())].Add(1)
}

func bucketOf(sec float64) int {
	return sort.SearchFloat64s(bucketBounds, sec) // len(bucketBounds) is +Inf
}

// Compared records the outcome of one prediction comparison.
func (s *Stats) Compared(outcome string) {
	switch outcome {
	case Agree:
		s.agree.Add(1)
	case Disagree:
		s.disagree.Add(1)
	default:
		s.cmpFail.Add(1)
	}
}

// Dropped records a mirrored request that was not sent because too many
// were in flight.
func (s *Stats) Dropped() { s.dropped.Add(1) }

// Snapshot is a point-in-time copy of a version's cumulative counters.
type Snapshot struct {
	At        time.Time
	Requests  uint64
	Errors    uint64
	Client    uint64
	LatencyNs uint64
	Buckets   [62]uint64
	Agree     uint64
	Disagree  uint64
	CmpFail   uint64
	Dropped   uint64
}

// Snapshot reads the counters.
func (s *Stats) Snapshot(now time.Time) Snapshot {
	snap := Snapshot{
		At: now, Requests: s.requests.Load(), Errors: s.errors.Load(), Client: s.client.Load(),
		LatencyNs: s.sum.Load(), Agree: s.agree.Load(), Disagree: s.disagree.Load(),
		CmpFail: s.cmpFail.Load(), Dropped: s.dropped.Load(),
	}
	for i := range s.buckets {
		snap.Buckets[i] = s.buckets[i].Load()
	}
	return snap
}

// Sub returns the counts accumulated between an earlier snapshot and s.
func (s Snapshot) Sub(earlier Snapshot) Snapshot {
	d := Snapshot{
		At: s.At, Requests: s.Requests - earlier.Requests, Errors: s.Errors - earlier.Errors,
		Client: s.Client - earlier.Client, LatencyNs: s.LatencyNs - earlier.LatencyNs,
		Agree: s.Agree - earlier.Agree, Disagree: s.Disagree - earlier.Disagree,
		CmpFail: s.CmpFail - earlier.CmpFail, Dropped: s.Dropped - earlier.Dropped,
	}
	for i := range s.Buckets {
		d.Buckets[i] = s.Buckets[i] - earlier.Buckets[i]
	}
	return d
}

// Quantile estimates a latency quantile (0.99 for p99) from the buckets,
// interpolating linearly inside the bucket as Prometheus'
// histogram_quantile does. It returns 0 when there are no requests.
func (s Snapshot) Quantile(q float64) time.Duration {
	var total uint64
	for _, c := range s.Buckets {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen uint64
	for i, c := range s.Buckets {
		if float64(seen+c) < rank || c == 0 {
			seen += c
			continue
		}
		lower := 0.0
		if i > 0 {
			lower = bucketBounds[i-1]
		}
		if i == len(bucketBounds) { // +Inf: report the last finite bound
			return seconds(lower)
		}
		upper := bucketBounds[i]
		return seconds(lower + (upper-lower)*(rank-float64(seen))/float64(c))
	}
	return seconds(bucketBounds[len(bucketBounds)-1])
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Registry holds the stats of every version the router serves and exports
// them to Prometheus.
type Registry struct {
	mu    sync.RWMutex
	stats map[string]*Stats // by version ID
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{stats: map[string]*Stats{}} }

// For returns the stats of a version, creating them on first use.
func (r *Registry) For(model, version string) *Stats {
	r.mu.RLock()
	s := r.stats[version]
	r.mu.RUnlock()
	if s != nil {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s = r.stats[version]; s == nil {
		s = &Stats{Model: model, Version: version}
		r.stats[version] = s
	}
	return s
}

// Lookup returns a version's stats, or nil.
func (r *Registry) Lookup(version string) *Stats {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.stats[version]
}

// Forget drops a version's stats once it is gone.
func (r *Registry) Forget(version string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.stats, version)
}

var (
	descRequests = prometheus.NewDesc("merlin_requests_total",
		"Prediction requests served by a model version, by status class (2xx, 4xx, 5xx; 5xx includes requests the model server never answered, 4xx includes 501 Not Implemented, which no version implements).",
		[]string{"model", "version", "code"}, nil)
	descLatency = prometheus.NewDesc("merlin_request_duration_seconds",
		"Latency of prediction requests through the router, per model version.",
		[]string{"model", "version"}, nil)
	descCompared = prometheus.NewDesc("merlin_predictions_compared_total",
		"Predictions of a candidate or shadow version compared with the stable version's, by outcome (agree, disagree, error).",
		[]string{"model", "version", "result"}, nil)
	descDropped = prometheus.NewDesc("merlin_mirror_dropped_total",
		"Mirrored requests not sent to a shadow version because too many were in flight.",
		[]string{"model", "version"}, nil)
)

// Describe implements prometheus.Collector.
func (r *Registry) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descLatency, descCompared, descDropped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *Registry) Collect(ch chan<- prometheus.Metric) {
	r.mu.RLock()
	all := make([]*Stats, 0, len(r.stats))
	for _, s := range r.stats {
		all = append(all, s)
	}
	r.mu.RUnlock()
	now := time.Now()
	for _, s := range all {
		snap := s.Snapshot(now)
		ok := snap.Requests - snap.Errors - snap.Client
		for code, n := range map[string]uint64{"2xx": ok, "4xx": snap.Client, "5xx": snap.Errors} {
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(n), s.Model, s.Version, code)
		}
		buckets := make(map[float64]uint64, len(bucketBounds))
		var cum uint64
		for i, ub := range bucketBounds {
			cum += snap.Buckets[i]
			buckets[ub] = cum
		}
		ch <- prometheus.MustNewConstHistogram(descLatency, snap.Requests, float64(snap.LatencyNs)/1e9, buckets, s.Model, s.Version)
		if n := snap.Agree + snap.Disagree + snap.CmpFail; n > 0 {
			for res, n := range map[string]uint64{Agree: snap.Agree, Disagree: snap.Disagree, Failed: snap.CmpFail} {
				ch <- prometheus.MustNewConstMetric(descCompared, prometheus.CounterValue, float64(n), s.Model, s.Version, res)
			}
		}
		if snap.Dropped > 0 {
			ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(snap.Dropped), s.Model, s.Version)
		}
	}
}

package prom

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"merlin.dev/merlin/metrics"
)

func samples(pairs ...float64) []model.SamplePair {
	var out []model.SamplePair
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, model.SamplePair{Timestamp: model.Time(pairs[i]), Value: model.SampleValue(pairs[i+1])})
	}
	return out
}

func TestGained(t *testing.T) {
	const since = 100
	for _, tc := range []struct {
		name string
		in   []model.SamplePair
		want float64
	}{
		{"no samples", nil, 0},
		{"only before the window", samples(50, 7, 90, 9), 0},
		{"baseline is the last sample at or before since", samples(50, 7, 100, 9, 110, 12, 120, 20), 11},
		{"born inside the window counts from zero", samples(110, 3, 120, 5), 5},
		{"reset counts the new value in full", samples(90, 30, 110, 35, 120, 4, 130, 6), 5 + 4 + 2},
		{"reset right after the baseline", samples(90, 30, 110, 20), 20},
		{"stale markers are skipped", samples(90, 3, 110, math.NaN(), 120, 8), 5},
		{"flat counter gains nothing", samples(90, 3, 110, 3, 120, 3), 0},
	} {
		if got := gained(tc.in, since); got != tc.want {
			t.Errorf("%s: gained = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRebucketRouterLayoutIsIdentity(t *testing.T) {
	bounds := metrics.BucketBounds()
	var want [62]uint64
	var cum []cumBucket
	total := 0.0
	for i, le := range bounds {
		want[i] = uint64(i % 5)
		total += float64(i % 5)
		cum = append(cum, cumBucket{le: le, n: total})
	}
	want[61] = 3
	cum = append(cum, cumBucket{le: math.Inf(1), n: total + 3})
	if got := rebucket(cum); got != want {
		t.Errorf("rebucket of the router's own layout:\n got %v\nwant %v", got, want)
	}
}

func TestRebucketCoarseBucketsKeepTotalsAndQuantile(t *testing.T) {
	// Istio-like: 100 observations, 94 in (10ms, 25ms], 6 in (250ms, 500ms].
	cum := []cumBucket{{0.005, 0}, {0.010, 0}, {0.025, 94}, {0.100, 94}, {0.250, 94}, {0.500, 100}, {math.Inf(1), 100}}
	got := rebucket(cum)
	var n uint64
	for i, c := range got {
		n += c
		if c == 0 {
			continue
		}
		lo := 0.0
		if i > 0 {
			lo = metrics.BucketBounds()[i-1]
		}
		if lo >= 0.5 || (i < 61 && metrics.BucketBounds()[i] <= 0.010) {
			t.Errorf("fine bucket %d (from %gs) got %d observations outside the source buckets", i, lo, c)
		}
	}
	if n != 100 {
		t.Errorf("total %d, want 100", n)
	}
	// histogram_quantile(0.99) on the coarse buckets: 250 + 250*(5/6) ms.
	want := 250*time.Millisecond + 250*time.Millisecond*5/6
	s := metrics.Snapshot{Buckets: got}
	if p99 := s.Quantile(0.99); float64(p99) < float64(want)/1.25 || float64(p99) > float64(want)*1.25 {
		t.Errorf("p99 %v, want %v within one fine bucket", p99, want)
	}
}

func TestRebucketOverflowAndMalformed(t *testing.T) {
	got := rebucket([]cumBucket{{100, 4}, {math.Inf(1), 9}})
	var n uint64
	for _, c := range got {
		n += c
	}
	if n != 9 || got[61] < 5 {
		t.Errorf("observations beyond the fine layout: %v", got)
	}
	// Cumulative counts that go down (reset seen on one series only) never
	// wrap around.
	got = rebucket([]cumBucket{{0.01, 5}, {0.02, 3}, {math.Inf(1), 6}})
	n = 0
	for _, c := range got {
		n += c
	}
	if n != 6 {
		t.Errorf("non-monotonic cumulative buckets gave %d observations, want 6: %v", n, got)
	}
}

func stream(labels map[string]string, pairs ...float64) *model.SampleStream {
	m := model.Metric{}
	for k, v := range labels {
		m[model.LabelName(k)] = model.LabelValue(v)
	}
	return &model.SampleStream{Metric: m, Values: samples(pairs...)}
}

func TestFoldIstio(t *testing.T) {
	s, err := Istio(IstioOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req := func(code string, pairs ...float64) *model.SampleStream {
		return stream(map[string]string{"__name__": "istio_requests_total", "response_code": code}, pairs...)
	}
	bucket := func(le string, pairs ...float64) *model.SampleStream {
		return stream(map[string]string{"__name__": "istio_request_duration_milliseconds_bucket", "le": le}, pairs...)
	}
	series := []*model.SampleStream{
		req("200", 900, 10, 1100, 40), req("503", 1100, 2), req("0", 1050, 1), req("404", 900, 1, 1100, 4),
		bucket("10", 900, 11, 1100, 40), bucket("100", 900, 11, 1100, 46), bucket("+Inf", 900, 11, 1100, 47),
		stream(map[string]string{"__name__": "istio_request_duration_milliseconds_sum"}, 900, 50, 1100, 290.5),
		stream(map[string]string{"__name__": "merlin_predictions_compared_total", "result": "agree"}, 1100, 7),
		stream(map[string]string{"__name__": "merlin_predictions_compared_total", "result": "error"}, 1100, 1),
		stream(map[string]string{"__name__": "merlin_mirror_dropped_total"}, 900, 2, 1100, 2),
	}
	snap, last := fold(s, series, 1000)
	if last != 1100 {
		t.Errorf("last sample %v, want 1100", last)
	}
	got := [...]uint64{snap.Requests, snap.Errors, snap.Client, snap.Agree, snap.CmpFail, snap.Dropped, snap.LatencyNs}
	want := [...]uint64{36, 3, 3, 7, 1, 0, uint64(240.5 * float64(time.Millisecond))}
	if got != want {
		t.Errorf("requests/errors/client/agree/cmpFail/dropped/latencyNs = %v, want %v", got, want)
	}
	var n uint64
	for _, c := range snap.Buckets {
		n += c
	}
	if n != 36 {
		t.Errorf("histogram holds %d, want 36", n)
	}
}

func TestIstioSelector(t *testing.T) {
	s, err := Istio(IstioOptions{Namespace: "models"})
	if err != nil {
		t.Fatal(err)
	}
	got := s.Traffic("iris", "iris-0a1b2c3d")
	want := `reporter="destination",destination_workload=~"iris-0a1b2c3d-predictor(-[0-9]+-deployment)?",destination_workload_namespace="models"`
	if got != want {
		t.Errorf("selector\n got %s\nwant %s", got, want)
	}
	s, err = Istio(IstioOptions{VersionLabel: "isvc", VersionPattern: "{version}", Reporter: "source"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Traffic("m", "m.1"); got != `reporter="source",isvc=~"m\\.1"` {
		t.Errorf("custom selector %s", got)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []IstioOptions{
		{VersionLabel: "bad-label"},
		{VersionPattern: "no placeholder"},
		{VersionPattern: "{version}(["},
		{Reporter: "both"},
	} {
		if _, err := Istio(o); err == nil {
			t.Errorf("Istio(%+v): no error", o)
		}
	}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "want http(s)://"},
		{Options{URL: "prometheus:9090"}, "want http(s)://"},
		{Options{URL: "ftp://p:9090"}, "want http(s)://"},
		{Options{URL: "http://p:9090", Schema: Schema{Requests: "x y"}}, "not a metric or label name"},
		{Options{URL: "http://p:9090", Lookback: -time.Second}, "must be positive"},
	} {
		_, err := New(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.o, err, tc.want)
		}
	}
	if _, err := New(Options{URL: "http://127.0.0.1:9090/prom"}); err != nil {
		t.Errorf("valid options: %v", err)
	}
}
